from django.contrib import admin
from django.urls import include, path

from billing.webhooks import stripe_webhook
from tenants.admin import admin_login

urlpatterns = [
    path("admin/login/", admin_login),  # Django admin's login, behind the failed-login limits
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("stripe/webhook/", stripe_webhook, name="stripe_webhook"),
    path("", include("dashboard.urls")),
]
