"""The user's API tokens page: create (the token is shown once), list, revoke.

Tokens themselves (storage, hashing, bearer authentication) live in `common.tokens` and
`common.models.ApiToken`, since the recovery API accepts them too.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from common.models import API_TOKENS_PER_USER, ApiToken, TokenRefused
from common.tokens import issue_token

from .forms import NewTokenForm


@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    """GET: the user's active tokens and the form. POST: a new token, shown on this answer
    only (rendered, not redirected: the plaintext never goes through the session)."""
    created = plaintext = None
    if request.method == "POST":
        form = NewTokenForm(request.POST)
        if form.is_valid():
            try:
                created, plaintext = issue_token(request.user, form.cleaned_data["name"])
            except TokenRefused as exc:
                form.add_error(exc.field, str(exc))
            else:
                form = NewTokenForm()
    else:
        form = NewTokenForm()
    tokens = list(ApiToken.objects.active().filter(user=request.user))
    return render(
        request,
        "qualifier/tokens.html",
        {
            "nav": "tokens",
            "form": form,
            "tokens": tokens,
            "created": created,
            "plaintext": plaintext,
            "limit": API_TOKENS_PER_USER,
        },
    )


@login_required
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: a confirmation. POST: revoke; another user's or a revoked token is a 404."""
    token = get_object_or_404(ApiToken.objects.active(), pk=pk, user=request.user)
    if request.method == "POST":
        if token.revoke():
            messages.success(
                request, f"Token {token.name!r} was revoked: requests that send it now get 401."
            )
        return redirect("qualifier:tokens")
    return render(request, "qualifier/token_revoke.html", {"nav": "tokens", "token": token})
