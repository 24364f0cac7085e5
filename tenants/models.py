"""Tenants: users, workspaces and who may do what in them, provider credentials, gateway keys, audit.

Every table holding tenant data carries a `workspace` foreign key (tests/tenants/test_tenant_fk.py
enforces it). Writes go through tenants.services, reads through tenants.selectors.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone

from tenants.roles import Role


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra: object) -> User:
        if not email:
            raise ValueError("email is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person. Email is the login; there are no usernames."""

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="Platform operator: may use Django admin.")
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []  # type: ignore[misc]  # Django reads it as a class attribute

    def __str__(self) -> str:
        return self.email


class Workspace(models.Model):
    """A tenant. Everything billed, limited and audited belongs to exactly one workspace."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=60, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    plan = models.ForeignKey(
        "billing.Plan",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="workspaces",
        help_text="Empty: the default plan.",
    )
    managed_access = models.BooleanField(
        default=False,
        help_text="May use the platform-managed provider credentials (charged at cost x (1 + managed markup)) "
        "for providers it has no key of its own for.",
    )
    log_bodies = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Store request and response bodies (cut at a documented size) for the request log.",
    )
    body_retention_days = models.PositiveSmallIntegerField(
        default=30, db_default=30, help_text="Stored bodies are deleted after this many days (1-365)."
    )

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="membership_unique_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} as {self.role}"


class Invitation(models.Model):
    """An emailed invitation to join a workspace. The emailed token is stored only as a SHA-256 hash."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "email"])]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.workspace} as {self.role}"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()


class WorkspaceDataKey(models.Model):
    """The workspace's data-encryption key, wrapped (AES-GCM) by a master key from the environment.

    Rotating the master key re-wraps this row only; provider secrets encrypted under the data key
    stay untouched (see contracts.crypto and `manage.py rotate_master_key`)."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="data_key")
    master_key_id = models.CharField(max_length=64)
    wrapped_key = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    rotated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"data key of workspace {self.workspace_id} (master key {self.master_key_id})"


class ProviderType(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    GOOGLE = "google", "Google Gemini"
    GROQ = "groq", "Groq"
    DEEPINFRA = "deepinfra", "DeepInfra"
    TOGETHER = "together", "Together AI"
    MISTRAL = "mistral", "Mistral"
    XAI = "xai", "xAI"
    FIREWORKS = "fireworks", "Fireworks AI"
    OPENROUTER = "openrouter", "OpenRouter"
    AZURE_OPENAI = "azure_openai", "Azure OpenAI"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible (self-hosted)"


class ProviderCredential(models.Model):
    """A workspace's own key for a provider (BYOK). The secret is AES-GCM encrypted under the
    workspace data key; only its last 4 characters are ever shown again."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="provider_credentials")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    provider = models.CharField(max_length=32, choices=ProviderType.choices)
    label = models.CharField(max_length=100)
    slug = models.SlugField(max_length=60, help_text="Addresses this credential's models: <slug>/<model>.")
    base_url = models.URLField(max_length=500, blank=True)
    secret_ciphertext = models.BinaryField()
    secret_last4 = models.CharField(max_length=4)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    last_validated_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "slug"],
                condition=models.Q(removed_at__isnull=True),
                name="credential_unique_active_slug",
            )
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.get_provider_display()}, …{self.secret_last4})"

    @property
    def masked_secret(self) -> str:
        return f"••••{self.secret_last4}"


class GatewayKey(models.Model):
    """A Turnpike key (`tpk_live_…`). Stored as a SHA-256 hash; the plaintext is shown once."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="gateway_keys")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=24, help_text="The first characters, for recognising the key.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        help_text="Model ids or glob patterns (`openai/*`, `anthropic/claude-*`) this key may call; empty = any.",
    )
    log_bodies = models.BooleanField(
        null=True, blank=True, help_text="Store bodies of this key's requests; empty: as the workspace says."
    )

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class AuditLog(models.Model):
    """Who did what to which object, when and from where. Append-only; written in the same
    transaction as the change it records."""

    workspace = models.ForeignKey(
        Workspace,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="audit_logs",
        help_text="Empty for platform-wide operator changes (plans, managed credentials).",
    )
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    actor_email = models.EmailField(blank=True, help_text="Kept even if the user is deleted.")
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "-created_at"])]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_email} {self.action} {self.target_repr}"


class PlatformCredential(models.Model):
    """A provider key owned by the platform (a "managed" credential), configured by operators in Django
    admin and used for workspaces with `managed_access` that have no key of their own for the provider.
    Platform-level, not tenant data: it has its own data key, wrapped by the master key, and the secret
    is AES-GCM encrypted under it; only the last 4 characters are ever shown again."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    provider = models.CharField(max_length=32, choices=ProviderType.choices)
    label = models.CharField(max_length=100)
    base_url = models.URLField(max_length=500, blank=True)
    master_key_id = models.CharField(max_length=64)
    wrapped_key = models.BinaryField()
    secret_ciphertext = models.BinaryField()
    secret_last4 = models.CharField(max_length=4)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider"], condition=models.Q(is_active=True), name="one_active_platform_credential"
            )
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.get_provider_display()}, …{self.secret_last4})"
