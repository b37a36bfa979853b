"""The participant pages in the participant's language: German complete (every page of a session,
the scripts' texts included, with no English left), the language from the link or the browser,
English for any other, the researcher's own texts per language with a warning where one is
missing, researcher pages in English, and a right-to-left language laid out right to left."""

from __future__ import annotations

import gettext
import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django import forms
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import translation

from tests.conftest import require
from tests.trials import save_body
from webmushra import i18n, rules
from webmushra.errors import ServiceError
from webmushra.forms import SettingsForm
from webmushra.models import Participant
from webmushra.services import experiments, sessions

REPO = Path(__file__).resolve().parents[2]
LOCALE = REPO / "webmushra" / "locale"
PO = LOCALE / "de" / "LC_MESSAGES" / "django.po"
MO = LOCALE / "de" / "LC_MESSAGES" / "django.mo"
SCRIPTS = REPO / "webmushra" / "static" / "webmushra"

#: Texts German spells as English does (every other German text must differ from its English).
SAME_IN_GERMAN = {"Pause", "Signal %(n)s", "System %(n)s"}
#: English words no German sentence uses: one of them on a German page is English left over
#: (a text never marked for translation, so absent from the catalogue).
ENGLISH_WORDS = {
    "the", "and", "your", "you", "please", "of", "to", "is", "are", "this", "that", "with", "for",
    "not", "or", "it", "has", "have", "be", "click", "play", "next", "rating", "loading",
}  # fmt: skip
#: Error texts of the scripts that only a broken page or a developer sees (never translated).
SCRIPT_DEVELOPER_TEXTS = {
    "the trial data has no rules or signal cap",
    "a trial needs 1 to ",
    "no decoded audio for stimulus '",
    "the headphone check has no trials",
}
#: The researcher's texts in German, as the settings page stores them.
GERMAN_TEXTS = {
    "title": "Hörtest Gitarrenverstärker",
    "description": "Wir vergleichen Modelle eines Gitarrenverstärkers mit dem echten Gerät.",
    "instructions": "Bewerten Sie jedes Signal im Vergleich zur Referenz.",
    "consent_text": "Ich willige ein, dass meine Bewertungen anonym gespeichert werden.",
    "questionnaire": {"age": "Alter"},
}
QUESTIONNAIRE = [
    {"name": "age", "label": "Age", "type": "number", "required": True},
    {"name": "comment", "label": "Any comments?", "type": "textarea"},
]
ENGLISH_TEXTS = {
    "description": "We compare models of a guitar amplifier with the real device.",
    "instructions": "Rate each signal against the reference.",
    "consent_text": "I agree that my ratings are stored anonymously.",
}


def read_po(path: Path) -> dict[str, tuple[str, bool]]:
    """msgid -> (msgstr, fuzzy) of a .po file (the header left out)."""
    entries: dict[str, tuple[str, bool]] = {}
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        parts: dict[str, list[str]] = {"msgid": [], "msgstr": []}
        current = None
        fuzzy = False
        for line in block.splitlines():
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            elif line.startswith(("msgid ", "msgstr ")):
                current, _, rest = line.partition(" ")
                parts[current].append(rest)
            elif line.startswith('"') and current:
                parts[current].append(line)
        if parts["msgid"]:
            msgid = "".join(json.loads(p) for p in parts["msgid"])
            if msgid:
                entries[msgid] = ("".join(json.loads(p) for p in parts["msgstr"]), fuzzy)
    return entries


@pytest.fixture(scope="module")
def german() -> dict[str, str]:
    return {msgid: msgstr for msgid, (msgstr, _fuzzy) in read_po(PO).items()}


# ----------------------------------------------------------------------------- the catalogue


def test_the_german_catalogue_is_complete_and_compiled():
    entries = read_po(PO)
    assert len(entries) > 100
    for msgid, (msgstr, fuzzy) in entries.items():
        assert msgstr and not fuzzy, f"no German for {msgid!r}"
        assert (msgstr != msgid) == (msgid not in SAME_IN_GERMAN), f"{msgid!r} is left in English"
        # A placeholder the German lacks (or adds) would break the page at run time.
        assert sorted(re.findall(r"%\(\w+\)s", msgid)) == sorted(re.findall(r"%\(\w+\)s", msgstr)), msgid
        assert sorted(re.findall(r"</?\w+>", msgid)) == sorted(re.findall(r"</?\w+>", msgstr)), msgid
    # The compiled catalogue Django reads is this one (make messages compiles it; both are committed).
    with MO.open("rb") as fh:
        compiled = gettext.GNUTranslations(fh)
    assert {k: v for k, v in compiled._catalog.items() if k} == {k: v for k, (v, _) in entries.items()}  # type: ignore[attr-defined]


def test_the_catalogue_holds_every_marked_text(tmp_path, monkeypatch):
    """makemessages over the app's code and templates finds exactly the committed msgids."""
    require(shutil.which("xgettext") is not None, "gettext (xgettext) is not installed")
    shutil.copytree(
        REPO / "webmushra",
        tmp_path / "webmushra",
        ignore=shutil.ignore_patterns("locale", "static", "migrations", "__pycache__"),
    )
    (tmp_path / "locale").mkdir()
    monkeypatch.chdir(tmp_path)
    with override_settings(LOCALE_PATHS=[]):
        call_command("makemessages", locale=["de"], verbosity=0, no_location=True)
    found = set(read_po(tmp_path / "locale" / "de" / "LC_MESSAGES" / "django.po"))
    committed = set(read_po(PO))
    assert found - committed == set(), "marked but not in the German catalogue (make messages)"
    assert committed - found == set(), "in the German catalogue but no longer used"


def _literals(code: str) -> list[str]:
    """The double-quoted strings of a script, its comments left out."""
    code = re.sub(r"^\s*//.*$", "", re.sub(r"/\*.*?\*/", "", code, flags=re.S), flags=re.M)
    return [json.loads(m) for m in re.findall(r'"(?:[^"\\\n]|\\.)*"', code)]


def _class_list(text: str) -> bool:
    """A string of CSS class names ("btn wm-play"), not words."""
    tokens = text.split()
    return all(re.fullmatch(r"[a-z]+(-[a-z]+)*", t) for t in tokens) and any("-" in t for t in tokens)


def test_every_text_the_scripts_show_is_in_the_catalogue():
    """Each text a participant script shows goes through t() and is one of i18n.JS_STRINGS
    (whose translations the page carries); a sentence outside them would stay English."""
    scripts = ["trial.js", "headphone.js", "level.js", "savequeue.js", "loader.js", "engine.js", "keyboard.js"]
    literals = {s for name in scripts for s in _literals((SCRIPTS / name).read_text())}
    prose = {s for s in literals if re.search(r"[A-Za-z] [A-Za-z%(]", s) and not _class_list(s)}
    prose -= SCRIPT_DEVELOPER_TEXTS
    assert prose - set(i18n.JS_STRINGS) == set()
    assert set(i18n.JS_STRINGS) - literals == set(), "JS_STRINGS names a text no script shows"
    # The literals passed to t() directly are in the list too.
    called = {
        json.loads(m)
        for name in scripts
        for m in re.findall(r'\bt\(\s*("(?:[^"\\]|\\.)*")', (SCRIPTS / name).read_text())
    }
    assert called and called <= set(i18n.JS_STRINGS)


def _node() -> str | None:
    """Node.js: the system's, else the one Playwright ships (requirements-test.txt)."""
    try:
        import playwright
    except ImportError:
        bundled = None
    else:
        bundled = Path(playwright.__file__).parent / "driver" / "node"
    return shutil.which("node") or (str(bundled) if bundled and bundled.exists() else None)


def run_t(catalogue: dict[str, str] | None, calls: list[list]) -> list[str]:
    """t(text, values) of static/webmushra/i18n.js, run in Node with the page's catalogue."""
    node = _node()
    require(node is not None, "Node.js (system or Playwright's) is not installed")
    page = "null" if catalogue is None else json.dumps({"textContent": json.dumps(catalogue)})
    module = (
        f"globalThis.document = {{ getElementById: (id) => (id === 'wm-i18n' ? {page} : null) }};\n"
        f"const {{ t }} = await import({json.dumps((SCRIPTS / 'i18n.js').as_uri())});\n"
        f"console.log(JSON.stringify({json.dumps(calls)}.map((c) => t(...c))));\n"
    )
    done = subprocess.run(
        [str(node), "--input-type=module", "-e", module], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


def test_the_scripts_translate_with_the_pages_catalogue():
    with translation.override("de"):
        catalogue = i18n.js_catalog()
    with translation.override("en"):
        assert i18n.js_catalog() == {}
    calls = [
        ["Play signal %(n)s (key %(key)s)", {"n": 3, "key": 3}],
        ["Listen to signals %(signals)s for at least %(seconds)s s.", {"signals": "1, 2", "seconds": 1.5}],
        ["Saving…"],
        ["Not in the catalogue %(n)s", {"n": 1}],
        ["Question %(n)s of %(total)s", {"n": 2}],
    ]
    assert run_t(catalogue, calls) == [
        "Signal 3 abspielen (Taste 3)",
        "Hören Sie die Signale 1, 2 jeweils mindestens 1.5 s lang an.",
        "Wird gespeichert…",
        "Not in the catalogue 1",
        "Frage 2 von %(total)s",
    ]
    # A page without a catalogue (English) shows the English texts.
    assert run_t(None, calls[:1]) == ["Play signal 3 (key 3)"]


# ----------------------------------------------------------------------------- reading a page


class _Text(HTMLParser):
    """What a participant reads (and a screen reader says) on a page: text, titles and labels."""

    ATTRIBUTES = ("aria-label", "title", "placeholder", "alt", "aria-valuetext")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.segments: list[str] = []
        self.data: dict[str, str] = {}
        self._script: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.segments += [v for k, v in attributes.items() if k in self.ATTRIBUTES and v]
        if tag in ("script", "style"):
            self._script = attributes.get("id") or ""

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._script = None

    def handle_data(self, data):
        if self._script is None:
            self.segments.append(data)
        elif self._script:
            self.data[self._script] = self.data.get(self._script, "") + data


def page_text(response) -> tuple[list[str], dict]:
    parser = _Text()
    parser.feed(response.content.decode())
    data = {k: json.loads(v) for k, v in parser.data.items()}
    segments = parser.segments
    trial = data.get("trial-data")
    if trial:  # the texts the player shows from its JSON
        segments += [trial["trial"]["title"], trial["instructions"], *(trial.get("labels") or {}).values()]
    segments += list((data.get("wm-i18n") or {}).values())
    return [t for t in (" ".join(s.split()) for s in segments) if t], data


def _pattern(msgid: str) -> re.Pattern:
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", msgid)).split())
    body = ".+?".join(re.escape(part) for part in re.split(r"%\(\w+\)s", text))
    return re.compile(("(?<!\\w)" if text[:1].isalnum() else "") + body + ("(?!\\w)" if text[-1:].isalnum() else ""))


def english_left(segments: list[str], catalogue: dict[str, str]) -> list[str]:
    """English on a page meant to be German: a catalogue text in its English form, or a word only
    English uses (a text that was never marked for translation)."""
    found = [
        f"{msgid!r} in {seg!r}"
        for msgid, msgstr in catalogue.items()
        if msgstr != msgid
        for seg in segments
        if _pattern(msgid).search(seg)
    ]
    found += [
        f"{w!r} in {seg!r}" for seg in segments for w in re.findall(r"[A-Za-z]+", seg) if w.lower() in ENGLISH_WORDS
    ]
    return found


def assert_german(response, catalogue: dict[str, str], *expected: str) -> dict:
    assert response.status_code in (200, 400, 410), response.status_code
    body = response.content.decode()
    assert '<html lang="de" dir="ltr">' in body
    assert response["Content-Language"] == "de"
    segments, data = page_text(response)
    assert english_left(segments, catalogue) == []
    text = " ".join(segments)
    for phrase in expected:
        assert phrase in text, (phrase, text)
    if "wm-i18n" in data:  # the scripts' texts: every one in German
        assert data["wm-i18n"] == {s: catalogue[s] for s in i18n.JS_STRINGS if s not in SAME_IN_GERMAN}
    return data


def test_the_page_check_finds_english(german, client, db, researcher):
    """The check above flags an English page (it can fail), and a word never marked."""
    exp = experiments.create_experiment(owner=researcher, title="Test", sample_rate=48000, anchors=False, config={})
    english = client.get(reverse("participant:landing", args=[exp.public_token]))  # a draft: not open
    found = english_left(page_text(english)[0], german)
    assert any("'This listening test is not open'" in f for f in found) and any("'not' in" in f for f in found)
    assert english_left(["Bitte klicken Sie hier"], german) == []
    assert english_left(["Bitte click hier"], german) == ["'click' in 'Bitte click hier'"]


# ----------------------------------------------------------------------------- a German session


def _json(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def _german_experiment(open_experiment, translations: bool = True):
    exp = open_experiment(n_excerpts=1, seconds=1.0)
    config = {
        **exp.config,
        "headphone_check": {"enabled": True, "trials_per_test": 1},
        "questionnaire": QUESTIONNAIRE,
        "translations": {"de": GERMAN_TEXTS} if translations else {},
    }
    for field, value in ENGLISH_TEXTS.items():
        setattr(exp, field, value)
    exp.config = rules.validate_config(config)
    exp.save()
    return exp


@pytest.mark.django_db
def test_a_german_session_shows_no_english(open_experiment, german):
    """Every page of a session, from the link's ?lang=de (the browser English) and from the
    browser's Accept-Language: German throughout, the researcher's German texts included."""
    exp = _german_experiment(open_experiment)
    for how in ("link", "browser"):
        accept = "de-DE,de;q=0.9,en;q=0.5" if how == "browser" else "en-GB,en;q=0.9"
        c = Client(HTTP_ACCEPT_LANGUAGE=accept)
        landing = reverse("participant:landing", args=[exp.public_token]) + ("?lang=de" if how == "link" else "")
        r = c.get(landing)
        assert_german(r, german, GERMAN_TEXTS["title"], GERMAN_TEXTS["description"], "Starten")
        assert "Accept-Language" in r["Vary"] and "Cookie" in r["Vary"]
        # The link's choice is kept for the session: no later URL carries ?lang=.
        assert (c.cookies.get("django_language") is not None) == (how == "link")
        if how == "link":
            cookie = c.cookies["django_language"]
            assert cookie.value == "de" and cookie["httponly"] and cookie["samesite"] == "Lax"
        r = c.post(landing, follow=True)
        assert_german(r, german, "Einwilligung", GERMAN_TEXTS["consent_text"], "Ich stimme zu")
        p = Participant.objects.get(token=r.request["PATH_INFO"].split("/")[2])
        r = c.post(reverse("participant:consent", args=[p.token]), {"agree": "yes"}, follow=True)
        assert_german(r, german, "Stellen Sie eine angenehme Lautstärke ein", "Beispiel abspielen")
        level = reverse("participant:level", args=[p.token])
        # The slider's numbers as HTML reads them (a German number, -40,0, would be dropped).
        slider = re.search(r'<input type="range" id="gain-db"[^>]*>', r.content.decode())[0]
        assert re.findall(r'(min|max|value)="([^"]*)"', slider) == [("min", "-40.0"), ("max", "12.0"), ("value", "0.0")]
        assert_german(c.post(level, {"gain_db": "loud"}), german, "gain_db: erwartet wird eine Zahl in dB")
        r = c.post(level, {"gain_db": "0"}, follow=True)
        data = assert_german(r, german, "Kopfhörerprüfung", "Die drei Klänge abspielen", "Weiter")
        for t in data["headphone-data"]["trials"]:
            for url in t["urls"]:
                sound = c.get(url)  # audio is alike in every language: no language headers
                assert sound.status_code == 200 and "Content-Language" not in sound
                assert "Accept-Language" not in sound.get("Vary", "")
        p.refresh_from_db()
        answers = [
            {"test": t["test"], "trial": i + 1, "chosen": t["target"]} for i, t in enumerate(p.screening["trials"])
        ]
        nxt = _json(c, reverse("participant:screening", args=[p.token]), {"answers": answers}).json()["next_url"]
        for index, stage in enumerate(("Übung", "Bewertung")):
            r = c.get(nxt)
            data = assert_german(r, german, stage, "Referenz", "Speichern und weiter", "Ausgezeichnet", "Mäßig")
            trial = data["trial-data"]
            assert trial["instructions"] == GERMAN_TEXTS["instructions"]
            assert trial["trial"]["title"] == ("Übung 1 von 1" if index == 0 else "Durchgang 1 von 1")
            if index == 0:
                assert set(trial["labels"].values()) >= {"Referenz", "Unterer Anker", "Mittlerer Anker"}
            nxt = _json(c, nxt, save_body(p, index, client=c)).json()["next_url"]
        r = c.get(nxt)
        assert_german(r, german, "Ein paar Fragen", "Alter *", "Haben Sie Anmerkungen?", "Abschließen")
        r = c.post(nxt, {"age": ""})
        assert_german(r, german, "Bitte beantworten Sie: Alter (Pflichtangabe)")
        r = c.post(nxt, {"age": "31"}, follow=True)
        assert_german(r, german, "Vielen Dank!", "Ihre Bewertungen sind gespeichert.")
        assert Participant.objects.get(pk=p.pk).questionnaire == {"age": "31", "comment": ""}


@pytest.mark.django_db
def test_the_other_endings_and_english_for_other_languages(open_experiment, german, client, researcher):
    exp = _german_experiment(open_experiment, translations=False)
    landing = reverse("participant:landing", args=[exp.public_token])
    # Declined, in German; without German texts the researcher's English ones are shown.
    c = Client()
    r = c.post(landing + "?lang=de", follow=True)
    assert ENGLISH_TEXTS["consent_text"] in r.content.decode() and "Einwilligung" in r.content.decode()
    p = Participant.objects.get(token=r.request["PATH_INFO"].split("/")[2])
    r = c.post(reverse("participant:consent", args=[p.token]), {"agree": "no"}, follow=True)
    assert_german(r, german, "Sie haben sich gegen eine Teilnahme entschieden.")
    # Screened out (every headphone answer wrong), in German.
    c = Client(HTTP_ACCEPT_LANGUAGE="de")
    r = c.post(landing, follow=True)
    p = Participant.objects.get(token=r.request["PATH_INFO"].split("/")[2])
    p = sessions.set_level(participant=sessions.give_consent(participant=p, agreed=True), gain_db=0.0)
    data = page_text(c.get(reverse("participant:screening", args=[p.token])))[1]["headphone-data"]
    for t in data["trials"]:
        for url in t["urls"]:
            c.get(url)
    p.refresh_from_db()
    wrong = [
        {"test": t["test"], "trial": i + 1, "chosen": t["target"] % 3 + 1} for i, t in enumerate(p.screening["trials"])
    ]
    nxt = _json(c, reverse("participant:screening", args=[p.token]), {"answers": wrong}).json()["next_url"]
    assert_german(c.get(nxt), german, "Vielen Dank für Ihre Zeit", "Sie haben nichts falsch gemacht.")
    # A language the pages do not ship (link and browser): English; a link's English beats a German browser.
    for accept, query in (("fr-FR,fr;q=0.9", "?lang=xx"), ("fr", ""), ("de", "?lang=en")):
        r = Client(HTTP_ACCEPT_LANGUAGE=accept).get(landing + query)
        assert '<html lang="en" dir="ltr">' in r.content.decode() and r["Content-Language"] == "en"
        assert "It takes about <strong>" in r.content.decode() and "Start</button>" in r.content.decode()
    # The researcher's page says which texts German participants see in English; all English.
    client.force_login(researcher)
    r = client.get(reverse("researcher:experiment", args=[exp.pk]), HTTP_ACCEPT_LANGUAGE="de")
    body = r.content.decode()
    assert '<html lang="en" dir="ltr">' in body and "Content-Language" not in r
    warning = re.search(r'<p class="warn" id="translation-warning-de">(.*?)</p>', body, re.S)
    assert warning, body
    for name in ("title", "description", "instructions", "consent text", "questionnaire label “Age”"):
        assert name in warning[1]
    assert "Any comments?" not in warning[1]  # the platform's own label has its German
    # Closed: the closed page in German.
    experiments.close_experiment(experiment=exp)
    assert_german(Client().get(landing + "?lang=de"), german, "Dieser Hörtest ist nicht geöffnet")


@pytest.mark.django_db
def test_german_texts_from_the_settings_page_and_the_warning(client, researcher, build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0, config={"questionnaire": QUESTIONNAIRE})
    for field, value in ENGLISH_TEXTS.items():
        setattr(exp, field, value)
    exp.save()
    client.force_login(researcher)
    url = reverse("researcher:settings", args=[exp.pk])
    form = SettingsForm.for_experiment(exp)
    data: dict = {}
    for name, field in form.fields.items():  # the page as a browser sends it (checkboxes on or left out)
        value = form.initial.get(name, field.initial)
        if isinstance(field, forms.BooleanField):
            data.update({name: "on"} if value else {})
        elif value is not None:
            data[name] = value
    assert data["de_title"] == "" and data["de_questionnaire"] == ""
    data.update(
        {f"de_{k}": v for k, v in GERMAN_TEXTS.items() if k != "questionnaire"},
        de_questionnaire=json.dumps(GERMAN_TEXTS["questionnaire"]),
    )
    r = client.post(url, data)
    assert r.status_code == 302, r.content.decode()[:2000]
    exp.refresh_from_db()
    assert exp.config["translations"] == {"de": GERMAN_TEXTS}
    page = client.get(reverse("researcher:experiment", args=[exp.pk])).content.decode()
    assert "translation-warning-de" not in page
    # The settings page shows what is stored; a German text emptied again is English again.
    assert GERMAN_TEXTS["consent_text"] in client.get(url).content.decode()
    assert client.post(url, {**data, "de_consent_text": "", "de_questionnaire": ""}).status_code == 302
    exp.refresh_from_db()
    assert (
        "consent_text" not in exp.config["translations"]["de"]
        and "questionnaire" not in exp.config["translations"]["de"]
    )
    page = client.get(reverse("researcher:experiment", args=[exp.pk])).content.decode()
    warning = re.search(r'id="translation-warning-de">(.*?)</p>', page, re.S)
    assert warning and "consent text" in warning[1] and "questionnaire label “Age”" in warning[1]
    assert "instructions" not in warning[1]


def test_translations_are_validated():
    fields = QUESTIONNAIRE
    cases = [
        ([], "expected an object of languages"),
        ({"fr": {"title": "Test"}}, "'fr' is not a language of the participant pages (use de)"),
        ({"en": {"title": "Test"}}, "'en' is not a language"),
        ({"de": "Hörtest"}, "de: expected an object of texts"),
        ({"de": {"subtitle": "x"}}, "de: subtitle is not a translatable text"),
        ({"de": {"title": 3}}, "de: title must be a text"),
        ({"de": {"questionnaire": ["Alter"]}}, "de: questionnaire must map field names to labels"),
        ({"de": {"questionnaire": {"gear": "Gitarre?"}}}, "de: the questionnaire has no field 'gear'"),
    ]
    for value, message in cases:
        with pytest.raises(ServiceError, match=re.escape(message)):
            rules.validate_translations(value, fields)
    kept = rules.validate_translations(
        {"de": {"title": "  Hörtest ", "description": "", "questionnaire": {"age": " "}}}, fields
    )
    assert kept == {"de": {"title": "Hörtest"}}
    assert rules.validate_translations({"de": {"title": ""}}, fields) == {}
    # Through the config: stored normalised, dropped when empty, checked against its questionnaire.
    assert "translations" not in rules.validate_config({"translations": {"de": {"title": " "}}})
    with pytest.raises(ServiceError, match="no field 'age'"):
        rules.validate_config({"translations": {"de": {"questionnaire": {"age": "Alter"}}}})


# ----------------------------------------------------------------------------- right to left


@pytest.mark.django_db
@override_settings(LANGUAGES=[("en", "English"), ("de", "German"), ("ar", "Arabic"), ("he", "Hebrew")])
def test_a_right_to_left_language_sets_the_page_direction(client, researcher):
    exp = experiments.create_experiment(owner=researcher, title="Test", sample_rate=48000, anchors=False, config={})
    landing = reverse("participant:landing", args=[exp.public_token])
    for code in ("ar", "he"):
        r = Client().get(landing + f"?lang={code}")
        assert f'<html lang="{code}" dir="rtl">' in r.content.decode() and r["Content-Language"] == code
    assert '<html lang="de" dir="ltr">' in Client().get(landing + "?lang=de").content.decode()
    assert '<html lang="ar" dir="rtl">' in Client(HTTP_ACCEPT_LANGUAGE="ar").get(landing).content.decode()


def test_the_player_keeps_its_axes_left_to_right_in_a_right_to_left_page():
    """Mirrored, the rotated sliders would put 100 at the bottom and the waveform's clicks would
    land on the wrong time: both keep direction: ltr; text around them follows the page."""
    css = re.sub(r"/\*.*?\*/", "", (SCRIPTS / "mushra.css").read_text(), flags=re.S)
    rule: dict[str, str] = {}
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        rule.setdefault(selector.strip(), body)  # the first rule of each selector (the wide screen's)
    assert "direction: ltr" in rule[".wm-slider"] and "direction: ltr" in rule[".wm-wavebox"]
    assert "flex-direction: row" in rule['[dir="rtl"] .wm-bands']
    for selector in (".wm-training-note", ".wm-band"):
        assert not re.search(r"(padding|margin|border)-(left|right)", rule[selector]), selector
