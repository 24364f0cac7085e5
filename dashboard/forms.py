from django import forms

from tenants.models import ProviderType
from tenants.roles import Role

BASE_URL_HELP = (
    "Optional. Follow the provider SDK's own convention: OpenAI-format providers include the version path "
    "(https://api.openai.com/v1); Anthropic and Google do not (https://api.anthropic.com). Required for "
    "Azure OpenAI (https://<resource>.openai.azure.com) and self-hosted OpenAI-compatible servers."
)


class WorkspaceForm(forms.Form):
    name = forms.CharField(max_length=100)


class CredentialForm(forms.Form):
    provider = forms.ChoiceField(choices=ProviderType.choices)
    label = forms.CharField(max_length=100, required=False, help_text="Defaults to the provider's name.")
    secret = forms.CharField(
        label="API key", widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}), max_length=4096
    )
    base_url = forms.CharField(label="Base URL", max_length=500, required=False, help_text=BASE_URL_HELP)


class RotateCredentialForm(forms.Form):
    secret = forms.CharField(
        label="New API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        max_length=4096,
    )


class GatewayKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    expires_on = forms.DateField(
        label="Expires on",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional. The key stops working at the start of this day (UTC).",
    )
    allowed_models = forms.CharField(
        label="Allowed models",
        required=False,
        max_length=4000,
        widget=forms.TextInput(attrs={"placeholder": "openai/gpt-4o-mini, anthropic/*"}),
        help_text="Optional. Comma-separated model ids or patterns; empty allows every model.",
    )

    def clean_allowed_models(self) -> list[str]:
        raw = self.cleaned_data.get("allowed_models") or ""
        return [part.strip() for part in raw.replace("\n", ",").split(",") if part.strip()]


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.DEVELOPER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class ConnectTestForm(forms.Form):
    """The key a test request from the Connect page is sent with (never stored)."""

    key = forms.CharField(label="Turnpike key", max_length=200)
