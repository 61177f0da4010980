"""Deterministic multilingual text for the CLIP BPE and Unigram tokenizer tests.

``training_lines`` is prose and records in many scripts, for fitting a small
Unigram model; ``corpus_strings`` is a varied set of at least 10,000 prompts that
a reimplementation must encode exactly as the reference library does: English
prompts, accents (composed and decomposed), CJK, emoji sequences, very long
texts, empty and whitespace-only strings, Unicode whitespace runs, HTML
entities, mixed case, digits of many scripts, punctuation and contractions,
the characters ftfy rewrites (ligatures, fullwidth forms, curly quotes, C1 and
C0 controls, terminal escapes, surrogates, line separators) and random
assigned code points. Both depend only on their seed and the installed Faker.
"""

from __future__ import annotations

import random
import unicodedata

from faker import Faker

LOCALES = [
    "en_US",
    "ru_RU",
    "zh_CN",
    "ja_JP",
    "de_DE",
    "ar_AA",
    "fr_FR",
    "ko_KR",
    "hi_IN",
    "el_GR",
    "he_IL",
    "th_TH",
    "vi_VN",
    "pl_PL",
    "es_ES",
    "tr_TR",
    "uk_UA",
    "fa_IR",
    "bn_BD",
    "hy_AM",
    "cs_CZ",
    "it_IT",
    "zh_TW",
]
LATIN_LOCALES = ["en_US", "de_DE", "fr_FR", "vi_VN", "pl_PL", "es_ES", "tr_TR", "cs_CZ", "it_IT"]
CJK_LOCALES = ["zh_CN", "ja_JP", "ko_KR", "zh_TW"]

WHITESPACE = [
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "\x0b",
    "\x0c",
    "\xa0",
    "\u1680",
    "\u2000",
    "\u2002",
    "\u2009",
    "\u200a",
    "\u200b",
    "\u202f",
    "\u205f",
    "\u3000",
    "\u2028",
    "\u2029",
    "\x85",
    "\x1c",
    "\x1f",
    "\ufeff",
    "\u180e",
    "\u2581",
    " \u2581 ",
    "\t \n",
]
EMOJI = [
    "😀",
    "🐱",
    "🚀",
    "❤️",
    "❤",
    "👍🏽",
    "👨‍👩‍👧",
    "🇷🇺",
    "🇯🇵",
    "🏳️‍🌈",
    "🎉",
    "🔥",
    "☀",
    "☀️",
    "🌲",
    "🐶",
    "🍕",
    "⚽",
    "🤖",
    "1️⃣",
    "#️⃣",
    "🧑🏿‍💻",
    "🫠",
    "🥹",
    "😂😂😂",
    "✨",
    "©️",
    "™",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
]
ENTITIES = [
    "&amp;",
    "&lt;",
    "&gt;",
    "&quot;",
    "&apos;",
    "&#39;",
    "&#x27;",
    "&nbsp;",
    "&eacute;",
    "&Eacute;",
    "&EACUTE;",
    "&NTILDE;",
    "&nTILDE;",
    "&SZLIG;",
    "&szlig;",
    "&copy;",
    "&copy",
    "&COPY;",
    "&reg",
    "&hellip;",
    "&rsquo;",
    "&ldquo;",
    "&rdquo;",
    "&mdash;",
    "&ndash;",
    "&euro;",
    "&#8217;",
    "&#x2019;",
    "&#x1F600;",
    "&#128512;",
    "&#128;",
    "&#150;",
    "&#133;",
    "&#0;",
    "&#xD800;",
    "&#1114112;",
    "&#xZZ;",
    "&#;",
    "&bogus;",
    "&amp;amp;",
    "&amp;amp;amp;",
    "&amp;lt;",
    "&amp;#39;",
    "&lt;b&gt;",
    "&AMP;",
    "&AMP",
    "&amp",
    "&lt",
    "&NotANumber;",
    "&Jscr;",
    "&checkmark;",
    "&fjlig;",
    "&#x2028;",
    "&#8232;",
    "&#x0A;",
    "&#9;",
    "&ThickSpace;",
    "&nbsp",
    "&frac12;",
    "&sup2;",
    "&times;",
    "&#65;&#66;",
    "&#x41;",
    "&not",
    "&notin;",
    "&AElig;",
    "&aelig;",
    "&#12354;",
    "&#xFF21;",
    "&#xFB01;",
    "&#x201C;",
]
PUNCTUATION = list(".,;:!?…—–-«»\"'()[]{}<>/\\|@#$%^&*_+=~`№¿¡‽·•°§¶†‡※、。「」『』【】〜・！？")
CONTRACTIONS = [
    "it's",
    "IT'S",
    "don't",
    "DON'T",
    "we're",
    "WE'RE",
    "I've",
    "I'm",
    "I'M",
    "you'll",
    "YOU'LL",
    "he'd",
    "HE'D",
    "it’s",
    "don’t",
    "rock 'n' roll",
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "''s",
    "'S",
    "'ſ",
    "'ſt",
    "o'clock",
    "'tis",
    "y'all'd've",
    "ʼs",
    "‘twas’",
    "l'été",
    "aujourd'hui",
]
DIGITS = [
    "0",
    "7",
    "42",
    "1984",
    "3.14159",
    "1,000,000",
    "-273.15",
    "1e-9",
    "0x1F",
    "v2.0.1",
    "2024-05-17",
    "12:30",
    "+7 (495) 123-45-67",
    "٣٤٥",
    "۱۲۳",
    "१२३",
    "১২৩",
    "๑๒๓",
    "１２３",
    "²³",
    "½",
    "¾",
    "⅓",
    "Ⅻ",
    "ⅻ",
    "①②",
    "⑳",
    "𝟙𝟚",
    "〇一二三",
    "十万",
    "٫",
    "½kg",
    "4K",
    "COVID-19",
    "x86_64",
    "mp3",
    "3D",
    "10%",
    "$5",
    "€20",
    "£3",
    "¥100",
]
FTFY_CASES = [
    "ﬁ",
    "ﬂ",
    "ﬀ",
    "ﬃ",
    "ﬄ",
    "ﬅ",
    "ﬆ",
    "Ĳ",
    "ĳ",
    "ŉ",
    "Ǳ",
    "ǲ",
    "ǳ",
    "Ǆ",
    "ǅ",
    "ǆ",
    "Ǉ",
    "ǈ",
    "ǉ",
    "Ǌ",
    "ǋ",
    "ǌ",
    "ＬＯＵＤ",
    "ｆｕｌｌ",
    "１２",
    "！？",
    "ｶﾀｶﾅ",
    "ﾊﾟﾝ",
    "ﾞ",
    "ﾟ",
    "ￂ",
    "ﾡ",
    "￦",
    "￠",
    "￤",
    "｟",
    "｡",
    "“",
    "”",
    "‘",
    "’",
    "‚",
    "„",
    "‛",
    "‟",
    "ʼ",
    "\x80",
    "\x81",
    "\x85",
    "\x8d",
    "\x91",
    "\x92",
    "\x93",
    "\x96",
    "\x99",
    "\x9f",
    "\x00",
    "\x07",
    "\x08",
    "\x1b",
    "\x7f",
    "\u206a",
    "\ufff9",
    "\ufffc",
    "\ufffd",
    "\ufeff",
    "\x1b[31m",
    "\x1b[0m",
    "\x1b[1;32m",
    "\x1b[٣m",
    "\x1b[",
    "\ud83d\ude00",
    "\ud83d",
    "\ude00",
    "\udfff\ud800",
    "\r\n",
    "\u2028",
    "\u2029",
    "\x85",
    "e\u0301",
    "A\u030a",
    "\u0345",
    "α\u0345",
    "ſ",
    "ǰ",
    "İ",
    "ß",
    "ẞ",
    "Σ",
    "\u200d",
    "\u200e",
    "\u202e",
    "\U000e0041",
    "\U0001d173",
    "<start_of_text>",
    "<end_of_text>",
    "<START_OF_TEXT>",
    "<ſtart_of_text>",
    "<start_of_text",
    "start_of_text>",
    "<|endoftext|>",
    "<s>",
    "</s>",
    "<pad>",
    "<unk>",
    "<mask>",
    "<S>",
    "＜ｓ＞",
    "＜/ｓ＞",
    "＜ｕｎｋ＞",
    "＜pad＞",
    "<s><s>",
    "</s><unk>",
]
PROMPT_TEMPLATES = [
    "a photo of a {}.",
    "a bad photo of the {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "itap of a {}.",
    "a rendering of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "a photo of the large {}.",
    "art of the {}.",
    "a drawing of a {}.",
    "a close-up photo of a {}.",
    "{}",
    "{}!",
    "A {} in the snow",
    "a black and white photo of the {}.",
    "a pixelated photo of a {}.",
    "the origami {}.",
    "a toy {}.",
]


def _fakers(seed: int) -> dict[str, Faker]:
    fakers = {}
    for i, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed * 1000 + i)
        fakers[locale] = fake
    return fakers


def _record(fake: Faker, rnd: random.Random) -> str:
    kind = rnd.randrange(6)
    if kind == 0:
        return fake.name()
    if kind == 1:
        return fake.address()
    if kind == 2:
        return fake.company()
    if kind == 3:
        return fake.job()
    if kind == 4:
        return fake.city()
    return fake.catch_phrase() if hasattr(fake, "catch_phrase") else fake.street_name()


def training_lines(seed: int = 0, per_locale: int = 200) -> list[str]:
    """Prose and records in every locale, one item a line (about 11,000 lines)."""
    rnd = random.Random(seed)
    fakers = _fakers(seed)
    lines = []
    for fake in fakers.values():
        for _ in range(per_locale):
            lines.append(fake.sentence(nb_words=rnd.randint(3, 14)))
            lines.append(_record(fake, rnd).replace("\n", " "))
    en = fakers["en_US"]
    for _ in range(2000):
        lines.append(rnd.choice(PROMPT_TEMPLATES).format(en.word()))
    rnd.shuffle(lines)
    return lines


def _random_case(text: str, rnd: random.Random) -> str:
    style = rnd.randrange(4)
    if style == 0:
        return text.upper()
    if style == 1:
        return text.title()
    if style == 2:
        return text.swapcase()
    return "".join(c.upper() if rnd.random() < 0.5 else c for c in text)


def _assigned_code_points() -> list[int]:
    """Code points with a category in this Python's Unicode, but not surrogates or private use."""
    return [cp for cp in range(0x110000) if unicodedata.category(chr(cp)) not in ("Cn", "Cs", "Co")]


def _insert(text: str, pieces: list[str], rnd: random.Random) -> str:
    """Put each piece at a random position of text (between characters, glued or spaced)."""
    for piece in pieces:
        i = rnd.randint(0, len(text))
        glue = rnd.choice(["", " "])
        text = text[:i] + glue + piece + glue + text[i:]
    return text


def corpus_strings(seed: int = 1, rounds: int = 720) -> list[str]:
    """At least 10,000 prompts; the same list on every call with the same seed."""
    rnd = random.Random(seed)
    fakers = _fakers(seed)
    en = fakers["en_US"]
    assigned = _assigned_code_points()
    out: list[str] = [
        "",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\u3000",
        "\xa0",
        "\u2581",
        " \t\r\n\x0b\x0c ",
        "\u200b",
        "\ufeff",
        "a",
        "A",
        ".",
        "'",
        "&",
        ";",
        "<",
        "&amp;",
        "<b>&amp;</b>",
        "😀",
        "中",
        "ا",
        "x" * 1000,
        "ab" * 500,
        " ".join(["word"] * 200),
        "1" * 300,
        "!" * 300,
        "<start_of_text>" * 40,
        "&amp;" * 100,
    ]
    for _ in range(rounds):
        locale = rnd.choice(LOCALES)
        fake = fakers[locale]
        # 1. A sentence in any locale, sometimes with its case changed.
        text = fake.sentence(nb_words=rnd.randint(1, 16))
        out.append(_random_case(text, rnd) if rnd.random() < 0.25 else text)
        # 2. Names, addresses, companies, jobs, cities.
        out.append(_record(fake, rnd))
        # 3. English CLIP prompts.
        word = en.word() if rnd.random() < 0.7 else fakers[rnd.choice(LOCALES)].word()
        out.append(rnd.choice(PROMPT_TEMPLATES).format(word))
        # 4. Accented Latin: plain, decomposed (NFD), and with combining marks added.
        text = fakers[rnd.choice(LATIN_LOCALES)].sentence(nb_words=rnd.randint(2, 10))
        form = rnd.randrange(3)
        if form == 1:
            text = unicodedata.normalize("NFD", text)
        elif form == 2:
            text = "".join(
                c + (chr(rnd.randint(0x300, 0x36F)) if c.isalpha() and rnd.random() < 0.2 else "") for c in text
            )
        out.append(text)
        # 5. CJK, mixed with Latin, digits and fullwidth forms.
        text = fakers[rnd.choice(CJK_LOCALES)].sentence(nb_words=rnd.randint(1, 10))
        extra = rnd.sample(
            ["ＣＬＩＰ", "ｶﾒﾗ", "iPhone 15", "４Ｋ", "AI", "2024年", "ｈｔｔｐ", "（株）", "㈱", "㍿"],
            rnd.randint(0, 2),
        )
        out.append(_insert(text, extra, rnd))
        # 6. Emoji, alone, glued and spaced, with words of any locale.
        words = fakers[rnd.choice(LOCALES)].words(nb=rnd.randint(0, 5)) + rnd.choices(EMOJI, k=rnd.randint(1, 4))
        rnd.shuffle(words)
        out.append(rnd.choice(["", " ", "  "]).join(words))
        # 7. Very long: paragraphs well over 77 tokens, or long words without spaces.
        kind = rnd.randrange(4)
        if kind == 0:
            out.append(
                " ".join(fakers[rnd.choice(LOCALES)].paragraph(nb_sentences=rnd.randint(8, 30)) for _ in range(2))
            )
        elif kind == 1:
            letters = "".join(fakers[rnd.choice(LOCALES)].words(nb=20))
            out.append("".join(rnd.choices(letters, k=rnd.randint(80, 600))))
        elif kind == 2:
            unit = rnd.choice(["a", "ab", "la", "ана", "ha", "中", "😀", "!", "1", "'s", "&amp;", " x"])
            out.append(unit * rnd.randint(2, 200))
        else:
            out.append(" ".join(rnd.choice(PROMPT_TEMPLATES).format(en.word()) for _ in range(rnd.randint(15, 40))))
        # 8. Whitespace runs of every kind, inside, leading and trailing; whitespace only.
        words = fakers[rnd.choice(LOCALES)].words(nb=rnd.randint(1, 6))
        text = "".join(w + "".join(rnd.choices(WHITESPACE, k=rnd.randint(1, 3))) for w in words)
        out.append("".join(rnd.choices(WHITESPACE, k=rnd.randint(0, 2))) + text)
        out.append("".join(rnd.choices(WHITESPACE, k=rnd.randint(0, 6))))
        # 9. HTML entities, sometimes with a literal "<" on the same or an earlier line.
        text = _insert(en.sentence(nb_words=rnd.randint(2, 8)), rnd.choices(ENTITIES, k=rnd.randint(1, 4)), rnd)
        shape = rnd.randrange(5)
        if shape == 1:
            text = "<p>" + text + "</p>"
        elif shape == 2:
            text = "x < y\n" + text
        elif shape == 3:
            text = text + "\n" + rnd.choice(["a <b> c", "&amp; again", "&lt;i&gt;"])
        out.append(text)
        # 10. Mixed case in Latin, Cyrillic, Greek, Armenian, Turkish.
        loc = rnd.choice(["en_US", "ru_RU", "el_GR", "hy_AM", "tr_TR", "de_DE", "uk_UA"])
        out.append(_random_case(fakers[loc].sentence(nb_words=rnd.randint(1, 8)), rnd))
        # 11. Digits and numbers of many scripts.
        parts = rnd.choices(DIGITS, k=rnd.randint(1, 4)) + en.words(nb=rnd.randint(0, 3))
        rnd.shuffle(parts)
        out.append(rnd.choice([" ", "", "-", ", "]).join(parts))
        # 12. Punctuation glued and alone, contractions.
        words = fakers[rnd.choice(LATIN_LOCALES)].words(nb=rnd.randint(1, 6))
        text = " ".join(w + "".join(rnd.choices(PUNCTUATION, k=rnd.randint(0, 3))) for w in words)
        out.append(_insert(text, rnd.choices(CONTRACTIONS, k=rnd.randint(0, 3)), rnd))
        # 13. What ftfy rewrites: ligatures, widths, quotes, controls, escapes, surrogates, specials.
        text = fakers[rnd.choice(LOCALES)].sentence(nb_words=rnd.randint(1, 6))
        out.append(_insert(text, rnd.choices(FTFY_CASES, k=rnd.randint(1, 5)), rnd))
        # 14. Random assigned code points, as a word or among words.
        soup = "".join(chr(rnd.choice(assigned)) for _ in range(rnd.randint(1, 12)))
        out.append(soup if rnd.random() < 0.5 else _insert(en.sentence(nb_words=4), [soup], rnd))
    return out
