"""Template helpers for the participant pages' languages (webmushra/i18n.py).

``{% js_catalog %}``: the scripts' texts in the active language, as a JSON data block
(``<script id="wm-i18n" type="application/json">``, read by static/webmushra/i18n.js).
``{{ experiment|translated:"consent_text" }}``: a researcher's text in the active language,
else in English. ``{% translation_gaps experiment as gaps %}``: per language, the researcher's
texts without a translation (the experiment page's warning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django import template
from django.utils.html import json_script
from django.utils.safestring import SafeString

from .. import i18n

if TYPE_CHECKING:  # no models at import: the browser tests' harness renders the player without the app
    from ..models import Experiment

register = template.Library()


@register.simple_tag
def js_catalog() -> SafeString:
    return json_script(i18n.js_catalog(), "wm-i18n")


@register.filter
def translated(experiment: Experiment, field: str) -> str:
    return i18n.text(experiment, field)


@register.simple_tag
def translation_gaps(experiment: Experiment) -> list[dict[str, object]]:
    return [
        {"code": code, "language": i18n.language_name(code), "missing": missing}
        for code, missing in i18n.missing_translations(experiment).items()
    ]
