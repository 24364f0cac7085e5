from django.conf import settings
from django.http import HttpRequest

from tenants.selectors import workspaces_for_user


def turnpike(request: HttpRequest) -> dict[str, object]:
    context: dict[str, object] = {"proxy_base_url": settings.TURNPIKE_PROXY_BASE_URL}
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        context["user_workspaces"] = list(workspaces_for_user(user=user))
    return context
