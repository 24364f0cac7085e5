from django.urls import path

from dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("switch/", views.switch, name="switch"),
    path("workspaces/new/", views.workspace_create, name="workspace_create"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("w/<slug:slug>/", views.overview, name="overview"),
    path("w/<slug:slug>/credentials/", views.credentials, name="credentials"),
    path("w/<slug:slug>/credentials/<str:credential_id>/rotate/", views.credential_rotate, name="credential_rotate"),
    path("w/<slug:slug>/credentials/<str:credential_id>/remove/", views.credential_remove, name="credential_remove"),
    path("w/<slug:slug>/keys/", views.keys, name="keys"),
    path("w/<slug:slug>/keys/<str:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("w/<slug:slug>/connect/", views.connect, name="connect"),
    path("w/<slug:slug>/members/", views.members, name="members"),
    path("w/<slug:slug>/members/<str:member_id>/role/", views.member_role, name="member_role"),
    path("w/<slug:slug>/members/<str:member_id>/remove/", views.member_remove, name="member_remove"),
    path("w/<slug:slug>/invitations/<str:invitation_id>/revoke/", views.invitation_revoke, name="invitation_revoke"),
    path("w/<slug:slug>/settings/", views.workspace_settings, name="settings"),
    path("w/<slug:slug>/audit/", views.audit, name="audit"),
]
