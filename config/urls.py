from django.contrib import admin
from django.urls import include, path

from tenants.admin import admin_login

urlpatterns = [
    path("admin/login/", admin_login),  # Django admin's login, behind the failed-login limits
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("", include("dashboard.urls")),
]
