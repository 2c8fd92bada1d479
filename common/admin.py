"""The admin for personal API tokens: read-only (never their digest), with a revoke action."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Personal API tokens, read-only (never their digest), with a revoke action. Tokens are
    created by their owners (the API tokens page) or `create_api_token`, never here."""

    list_display = ("name", "user", "prefix_shown", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    ordering = ("-created_at", "-id")
    actions = ("revoke_selected",)
    fields = ("user", "name", "prefix_shown", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the row records when a token stopped working

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.display(description=_("token"), ordering="prefix")
    def prefix_shown(self, token: ApiToken) -> str:
        return f"{token.prefix}…"

    @admin.action(description=_("Revoke selected tokens"), permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: Any) -> None:
        selected = queryset.count()
        revoked = queryset.revoke()
        message = ngettext(
            "Revoked %(count)d token: requests that send it now get 401.",
            "Revoked %(count)d tokens: requests that send them now get 401.",
            revoked,
        ) % {"count": revoked}
        if selected > revoked:
            message += " " + gettext("%(count)d already revoked.") % {"count": selected - revoked}
        self.message_user(request, message, messages.SUCCESS)
