"""Query filters of the session list."""

from __future__ import annotations

import django_filters
from django import forms
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from sessions_app.models import EmotionSession


class _SessionFilterForm(forms.Form):
    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("date_from must not be after date_to.")
        return data


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(django_filters.NumberFilter):
    """A database id: a whole number from 1 to 2**63 - 1 (bigint); anything else is a 400, never a database error
    (``NumberFilter`` alone accepts ``1e308``, which overflows the database's integer)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class SessionFilter(django_filters.FilterSet):
    """``kind``, ``status``, ``owner`` (user id; only meaningful for admins, teachers only ever see their own
    sessions), ``date_from``/``date_to`` (inclusive dates of ``created_at`` in the server's time zone, YYYY-MM-DD)
    and ``ordering`` (``created_at``, ``ended_at``, ``name``, ``frames_processed``; ``-`` prefix = descending)."""

    kind = django_filters.ChoiceFilter(choices=EmotionSession.Kind.choices, help_text="Session kind.")
    status = django_filters.ChoiceFilter(choices=EmotionSession.Status.choices, help_text="Running or ended.")
    owner = IdFilter(field_name="owner_id", help_text="Owner's user id (admins; teachers see only their own sessions).")
    date_from = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__gte", help_text="Created on or after this date (YYYY-MM-DD)."
    )
    date_to = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__lte", help_text="Created on or before this date (YYYY-MM-DD)."
    )
    ordering = django_filters.OrderingFilter(
        fields=("created_at", "ended_at", "name", "frames_processed"),
        help_text="Sort key; prefix with '-' for descending. Default: -created_at.",
    )

    class Meta:
        model = EmotionSession
        fields = ["kind", "status", "owner", "date_from", "date_to"]
        form = _SessionFilterForm
