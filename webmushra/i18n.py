"""The participant pages' languages: which one a request gets, the scripts' texts, and the
researcher's own texts (title, description, instructions, consent, questionnaire labels) in
that language.

A participant's language is the link's ``?lang=`` (kept in Django's language cookie for the
rest of the session), else the browser's Accept-Language, else English (``LANGUAGE_CODE``);
``settings.LANGUAGES`` lists those the pages ship in (English and German, as webMUSHRA's).
The platform's own texts go through Django's translation catalogues (``webmushra/locale``).
The researcher's texts are stored in English on the experiment and, per language, under
``config["translations"][code]`` (checked by ``rules.validate_translations``); a text without
its translation is shown in English, and the researcher's experiment page says which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import translation
from django.utils.translation import gettext, gettext_noop

from . import rules
from .paradigms import blocks as paradigm_blocks

if TYPE_CHECKING:
    from .models import Experiment

#: The query parameter of a study link that chooses the participant's language (``?lang=de``).
LANGUAGE_PARAM = "lang"


def participant_language(request: HttpRequest) -> tuple[str, bool]:
    """(language code, whether the link's ``?lang=`` chose it). An unknown ``?lang=`` is ignored."""
    asked = request.GET.get(LANGUAGE_PARAM, "").strip().lower().replace("_", "-")[:16]
    if asked:
        try:
            return translation.get_supported_language_variant(asked), True
        except LookupError:
            pass
    return translation.get_language_from_request(request), False


#: Every text the participant pages' scripts show (static/webmushra/*.js pass them to t() of
#: i18n.js): the page carries their translations (``js_catalog``) as JSON, so the scripts need no
#: request of their own and the page's Content-Security-Policy stays as it is.
JS_STRINGS: tuple[str, ...] = (
    # trial.js: the scale's bands (as the page's labels), the signals, what is still missing
    gettext_noop("Excellent"),
    gettext_noop("Good"),
    gettext_noop("Fair"),
    gettext_noop("Poor"),
    gettext_noop("Bad"),
    gettext_noop("The sounds could not be loaded: %(reason)s. Please reload the page."),
    gettext_noop("Signal %(n)s"),
    gettext_noop("Play signal %(n)s"),
    gettext_noop("Play signal %(n)s (key %(key)s)"),
    gettext_noop("Signal %(n)s rating"),
    gettext_noop("not played"),
    gettext_noop("playing"),
    gettext_noop("played"),
    gettext_noop("not rated"),
    gettext_noop("Play signal %(n)s to rate it."),
    gettext_noop("Play signal %(signals)s."),
    gettext_noop("Play signals %(signals)s."),
    gettext_noop("Listen to signal %(signals)s for at least %(seconds)s s."),
    gettext_noop("Listen to signals %(signals)s for at least %(seconds)s s."),
    gettext_noop("Rate signal %(signals)s."),
    gettext_noop("Rate signals %(signals)s."),
    gettext_noop("Rate at least one signal 100 (the one identical to the reference)."),
    gettext_noop("You can submit in %(seconds)s s."),
    gettext_noop("Write a comment on this trial."),
    gettext_noop("Play"),
    gettext_noop("Pause"),
    gettext_noop("loop starts at %(seconds)s seconds"),
    gettext_noop("loop ends at %(seconds)s seconds"),
    gettext_noop("Saving…"),
    gettext_noop("Saved."),
    gettext_noop("Not saved: %(reason)s"),
    # headphone.js
    gettext_noop("Which sound was the quietest: 1, 2 or 3?"),
    gettext_noop("Which noise contained a faint tone: 1, 2 or 3?"),
    gettext_noop("Question %(n)s of %(total)s"),
    gettext_noop("Loading the sounds…"),
    # level.js
    gettext_noop("Play the example"),
    gettext_noop("Stop the example"),
    gettext_noop("Loading the example…"),
    gettext_noop("no example to play"),
    gettext_noop("The example could not be played: %(reason)s"),
    # savequeue.js, loader.js
    gettext_noop("Saving… retrying in %(seconds)s s (attempt %(attempt)s)"),
    gettext_noop("the server's answer was not understood (HTTP %(status)s)"),
    gettext_noop("the server refused the answer (HTTP %(status)s)"),
    gettext_noop("could not load a sound (HTTP %(status)s)"),
    gettext_noop("this browser has no Web Audio support"),
)


def js_catalog() -> dict[str, str]:
    """The scripts' texts in the active language: English text -> translation (only those that
    differ; empty in English)."""
    return {text: gettext(text) for text in JS_STRINGS if gettext(text) != text}


#: The researcher's texts a translation may give, with the names the researcher pages use.
TEXT_FIELDS: dict[str, str] = {
    "title": "title",
    "description": "description",
    "instructions": "instructions",
    "consent_text": "consent text",
    "trial_instructions": "trial instructions",
}


def _english(experiment: Experiment, field: str) -> str:
    """The researcher's text in English: a field of the experiment, or a text of its config."""
    value = getattr(experiment, field) if field in rules.SETTINGS_FIELDS else experiment.config.get(field)
    return str(value or "")


def _translation(experiment: Experiment, language: str | None = None) -> dict[str, Any]:
    code = language or translation.get_language() or settings.LANGUAGE_CODE
    found = (experiment.config.get("translations") or {}).get(code.split("-")[0])
    return found if isinstance(found, dict) else {}


def text(experiment: Experiment, field: str, language: str | None = None) -> str:
    """The researcher's ``field`` (``TEXT_FIELDS``) in the active language, else in English."""
    if field not in TEXT_FIELDS:
        raise ValueError(f"{field!r} is not a translatable text")
    return str(_translation(experiment, language).get(field) or _english(experiment, field))


def _block_translation(block: dict[str, Any], language: str | None = None) -> dict[str, Any]:
    code = (language or translation.get_language() or settings.LANGUAGE_CODE).split("-")[0]
    found = (block.get("translations") or {}).get(code)
    return found if isinstance(found, dict) else {}


def block_instructions(experiment: Experiment, block: dict[str, Any], language: str | None = None) -> str:
    """A block's instructions on its trial pages in the active language: the block's own
    (translated, else English), else the experiment's ``trial_instructions``."""
    own = _block_translation(block, language).get("instructions") or block.get("instructions")
    return str(own or text(experiment, "trial_instructions", language))


def block_scale(block: dict[str, Any], language: str | None = None) -> dict[str, Any]:
    """``block`` with its own category labels (``scale``) in the active language, else English."""
    labels = _block_translation(block, language).get("scale")
    return block | {"scale": labels} if labels else block


def questionnaire(experiment: Experiment, language: str | None = None) -> list[dict[str, Any]]:
    """The questionnaire's fields with their labels in the active language: the researcher's
    translation, else the platform's own for the default questionnaire, else English."""
    labels = _translation(experiment, language).get("questionnaire") or {}
    defaults = {f["label"] for f in rules.DEFAULT_QUESTIONNAIRE}
    fields = rules.questionnaire_fields(experiment)
    for f in fields:
        given = labels.get(f["name"])
        if given:
            f["label"] = given
        elif f.get("label") in defaults:
            f["label"] = gettext(f["label"])
    return fields


def missing_translations(experiment: Experiment) -> dict[str, list[str]]:
    """Per language of the participant pages other than English: the researcher's texts that
    are set in English but have no translation there (participants see them in English)."""
    out: dict[str, list[str]] = {}
    fields = rules.questionnaire_fields(experiment)
    defaults = {f["label"] for f in rules.DEFAULT_QUESTIONNAIRE}
    for code, _name in settings.LANGUAGES:
        if code == settings.LANGUAGE_CODE:
            continue
        given = _translation(experiment, code)
        labels = given.get("questionnaire") or {}
        missing = [name for field, name in TEXT_FIELDS.items() if _english(experiment, field) and not given.get(field)]
        missing += [
            f"questionnaire label “{f['label']}”"
            for f in fields
            if f.get("label") not in defaults and not labels.get(f["name"])
        ]
        for n, block in enumerate(paradigm_blocks(experiment.config), start=1):
            own = _block_translation(block, code)
            if block["instructions"] and not own.get("instructions"):
                missing.append(f"block {n} instructions")
            if block["scale"] and not own.get("scale"):
                missing.append(f"block {n} category labels")
        if missing:
            out[code] = missing
    return out


def language_name(code: str) -> str:
    """The name ``settings.LANGUAGES`` gives a language code (the code itself when not listed)."""
    return dict(settings.LANGUAGES).get(code, code)
