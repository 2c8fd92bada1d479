"""The "New run" form: a CSV or Excel upload and the criteria, prefilled with the project's
profile."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from common.models import TOKEN_NAME_MAX_LENGTH

from .conf import conf
from .criteria import LIST_FIELDS, Criteria, CriteriaError
from .prospects import ParsedProspects, ProspectErrors, ProspectInputError, parse_upload
from .uploads import describe_bytes

#: The criteria fields in the order the form shows them.
CRITERIA_FIELDS = (
    "industries",
    "min_employees",
    "max_employees",
    "countries",
    "title_keywords",
    "excluded_domains",
    "min_score",
)


def sentence(text: str) -> str:
    """Engine messages are clauses ("'x' is not a whole number"); forms show sentences."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _list_field(label: str, help_text: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        help_text=help_text,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )


def _number_field(label: str, help_text: str, **attrs: Any) -> forms.CharField:
    # Text, not IntegerField: Criteria.with_overrides is the one place that validates values,
    # so the form and the API give the same messages.
    return forms.CharField(
        label=label,
        required=False,
        help_text=help_text,
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "step": 1, **attrs}),
    )


class NewRunForm(forms.Form):
    """Valid means: the CSV parsed (`.prospects`) and the criteria validated (`.criteria`).

    The criteria fields start with the project's defaults. A field that is posted overrides
    the default (an empty list field means "any"); a field that is not posted at all, as from
    a script that sends only the file, keeps the default.
    """

    prospects_file = forms.FileField(
        label="Prospects (CSV or Excel file)",
        help_text="A UTF-8 CSV file or an Excel workbook (.xlsx, its first sheet) with a header "
        "row. Required columns: name, company. Optional: email, website or domain, title, "
        "industry, employees, country; other columns are kept.",
        widget=forms.ClearableFileInput(
            attrs={
                "accept": ".csv,.xlsx,text/csv,"
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
        ),
    )
    industries = _list_field("Industries", "Comma-separated. Empty: any industry.")
    min_employees = _number_field("Employees from", "Empty: no lower bound.", min=0)
    max_employees = _number_field("Employees up to", "Empty: no upper bound.", min=0)
    countries = _list_field("Countries", "Comma-separated. Empty: any country.")
    title_keywords = _list_field(
        "Title keywords", "Comma-separated words a senior title contains. Empty: any title."
    )
    excluded_domains = _list_field(
        "Excluded domains", "Comma-separated, e.g. competitor.com. Subdomains are excluded too."
    )
    min_score = _number_field("Minimum score", "0 to 100: the score a qualified prospect needs.")

    def __init__(
        self,
        *args: Any,
        defaults: Criteria,
        upload_refused: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("initial", criteria_initial(defaults))
        super().__init__(*args, **kwargs)
        self.defaults = defaults
        self.criteria = defaults
        self.prospects = ParsedProspects()
        #: Why the upload handler stopped the file (qualifier.uploads), which is then absent.
        self.upload_refused = upload_refused
        if upload_refused:
            self.fields["prospects_file"].required = False

    def clean_prospects_file(self) -> Any:
        if self.upload_refused:
            raise ValidationError(self.upload_refused)
        upload = self.cleaned_data["prospects_file"]
        limit = conf.QUALIFIER_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise ValidationError(
                f"The file is {describe_bytes(upload.size)}; the limit is "
                f"{describe_bytes(limit)}. Split it into smaller files."
            )
        try:
            self.prospects = parse_upload(upload.read(), name=upload.name or "")
        except ProspectErrors as exc:
            # Every bad line and value, one message each, so all can be fixed at once.
            raise ValidationError([sentence(text) for text in exc.messages()]) from None
        except ProspectInputError as exc:
            raise ValidationError(sentence(str(exc))) from None
        return upload

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        overrides: dict[str, Any] = {}
        for name in CRITERIA_FIELDS:
            if name not in self.data:
                continue
            value = cleaned.get(name, "")
            if name == "min_score" and value == "":
                continue  # an emptied score keeps the default; emptied bounds mean "no bound"
            overrides[name] = value
        try:
            self.criteria = self.defaults.with_overrides(overrides)
        except CriteriaError as exc:
            for name, message in exc.errors.items():
                self.add_error(name if name in self.fields else None, sentence(message))
        return cleaned


def criteria_initial(criteria: Criteria) -> dict[str, str]:
    values = criteria.as_dict()
    return {
        name: ", ".join(values[name])
        if name in LIST_FIELDS
        else ("" if values[name] is None else str(values[name]))
        for name in CRITERIA_FIELDS
    }


class NewTokenForm(forms.Form):
    """The name of a new API token. The rules (required, length, unique, how many) are
    `ApiToken.objects.issue`'s: the view shows its refusal on this form."""

    name = forms.CharField(
        label="Name",
        required=False,
        help_text="Where the token is used, e.g. 'nightly import' or 'laptop'.",
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "maxlength": TOKEN_NAME_MAX_LENGTH, "spellcheck": "false"}
        ),
    )
