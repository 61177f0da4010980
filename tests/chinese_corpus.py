"""Deterministic prompts for the WordPiece (Chinese-CLIP) tokenizer tests.

``chinese_strings`` mixes simplified and traditional Chinese from Faker's
zh_CN / zh_TW locales with hand-made cases: Chinese-English mixes, full-width
punctuation, Latin and digits, emoji, accents, Greek, kana, hangul, control
and format characters, odd whitespace, special tokens written in the text,
very long texts and words around BERT's 100-character word limit. It depends
only on its seed and the installed Faker version.
"""

from __future__ import annotations

import random

from faker import Faker

WHITESPACE = [
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "\x0b",
    "\x0c",
    "\xa0",
    "\u3000",
    "\u2000",
    "\u2002",
    "\u2009",
    "\u200a",
    "\u202f",
    "\u205f",
    "\u1680",
    "\u2028",
    "\u2029",
    "\x85",
    "\x1c",
    "\x1f",
]
# Controls, formats, private use, unassigned, noncharacters, NUL and U+FFFD: most are dropped.
CONTROL = [
    "\x00",
    "\x01",
    "\x07",
    "\x08",
    "\x1b",
    "\x7f",
    "\x80",
    "\x9f",
    "\xad",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u200f",
    "\u2060",
    "\u2066",
    "\ufeff",
    "\ufffd",
    "\ufffe",
    "\ue000",
    "\uf8ff",
    "\U000e0001",
    "\U000e0041",
    "\U000f0000",
    "\U0010fffd",
    "\u0378",
    "\u0600",
    "\u061c",
    "\U0001d173",
]
EMOJI = ["😀", "🐱", "🐼", "🚀", "❤️", "👍🏽", "👨‍👩‍👧", "🇨🇳", "🎉", "🔥", "☀", "🌸", "🍜", "🧧", "🤖", "🀄", "㊗️"]
CN_PUNCT = list("，。！？；：“”‘’（）【】《》〈〉、…—～·「」『』〔〕〖〗﹏￥％＃＠＆＊")
ASCII_PUNCT = list(".,;:!?-\"'()[]{}<>/\\|@#$%^&*_+=~`")
LATIN_WORDS = [
    "photo",
    "of",
    "a",
    "cat",
    "dog",
    "iPhone",
    "Pro",
    "Max",
    "USB-C",
    "HDMI",
    "4K",
    "Wi-Fi",
    "NASA",
    "New York",
    "GPT",
    "CLIP",
    "ONNX",
    "x86_64",
    "v1.2.3",
    "mp3",
    "COVID-19",
    "e-mail",
    "OK",
    "Hello",
    "WORLD",
    "unaffable",
    "Shanghai",
    "Beijing",
    "Taipei",
    "KTV",
    "DIY",
    "VIP",
    "PPT",
    "App",
    "5G",
]
ACCENTED = [
    "café",
    "naïve",
    "Zoë",
    "résumé",
    "façade",
    "Ångström",
    "São Paulo",
    "Ñandú",
    "Øresund",
    "Ærø",
    "CAFÉ",
    "NAÏVE",
    "crème brûlée",
    "Mötley Crüe",
    "Việt Nam",
    "Hà Nội",
    "Tiếng Việt",
    "Dvořák",
    "Łódź",
    "Ελληνικά",
    "αθήνα",
    "ΑΘΉΝΑ",
    "Straße",
    "İstanbul",
    "ǅemal",
    "ﬁne",
    "e\u0301",
    "E\u0301\u0327",
    "a\u0300\u0301\u0302",
    "pi\u00f1a",
    "pin\u0303a",
    "Å",
    "\u212b",
    "\u2126",
    "µ",
    "ß",
    "ẞ",
]
# Capital sigma at the end of a word: Python's lower() gives "ς" there, the Rust tokenizer "σ".
GREEK_FINAL_SIGMA = ["ΟΔΟΣ", "ΚΟΣΜΟΣ", "Ὀδυσσεύς", "ΑΣ", "ΠΑΣ.", "ΣΟΦΟΣ ΑΝΘΡΩΠΟΣ"]
KANA = [
    "ひらがな",
    "カタカナ",
    "ｶﾀｶﾅ",
    "ﾃｽﾄ",
    "ラーメン",
    "すし",
    "東京タワー",
    "こんにちは世界",
    "ポケモン",
    "が",
    "か\u3099",
    "パ",
    "ハ\u309a",
    "ゔ",
    "ヴ",
    "ー",
    "〜",
    "・",
    "ゝゞヽヾ",
]
HANGUL = ["한국어", "서울", "김치", "안녕하세요", "\u1100\u1161", "\u1112\u1161\u11ab", "ㄱㄴㄷ", "ᄀ"]
# CJK beyond the basic block: extensions A-G, compatibility ideographs, radicals, symbols.
CJK_EXTRA = [
    "\u3400",
    "\u4db5",
    "\U00020000",
    "\U0002a6d6",
    "\U0002a700",
    "\U0002b740",
    "\U0002b820",
    "\U0002b8ff",
    "\U0002b920",
    "\U0002ceaf",
    "\U0002ceb0",
    "\U00030000",
    "\uf900",
    "\uf9ff",
    "\ufa6d",
    "\U0002f800",
    "\U0002fa1d",
    "\u2f00",
    "\u2e80",
    "\u31c0",
    "\u3007",
    "\u3005",
    "\u3021",
    "\u9fff",
    "\u9fa5",
    "㊣",
    "㈱",
    "①",
    "Ⅻ",
    "〇",
]
SPECIAL = [
    "[CLS]",
    "[SEP]",
    "[PAD]",
    "[UNK]",
    "[MASK]",
    "[cls]",
    "[Mask]",
    "[unused1]",
    "[C\u200bLS]",
    "[SEP\x00]",
    "[[CLS]]",
    "[CLS",
    "CLS]",
]
TEMPLATES = [
    "一张{}的照片",
    "一张{}的图片",
    "{}的照片",
    "这是{}",
    "一幅{}的画",
    "一只{}",
    "{}的特写",
    "一个{}的标志",
    "一張{}的照片",
    "這是{}",
    "a photo of {}",
    "{}，高清",
    "「{}」",
    "《{}》",
    "{}。",
    "【{}】{}",
]


def _fullwidth(text: str) -> str:
    """ASCII letters, digits and punctuation shifted to their full-width forms; space to U+3000."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text)


def _random_case(text: str, rnd: random.Random) -> str:
    style = rnd.randrange(4)
    if style == 0:
        return text.upper()
    if style == 1:
        return text.title()
    if style == 2:
        return text.lower()
    return "".join(c.upper() if rnd.random() < 0.5 else c for c in text)


def _random_char(rnd: random.Random) -> str:
    """A code point from a block that exercises some rule, or anywhere at all."""
    lo, hi = rnd.choice(
        [
            (0x20, 0x7E),
            (0xA0, 0x24F),
            (0x300, 0x36F),
            (0x370, 0x3FF),
            (0x400, 0x4FF),
            (0x590, 0x6FF),
            (0x900, 0x97F),
            (0xE00, 0xE7F),
            (0x1100, 0x11FF),
            (0x1E00, 0x1FFF),
            (0x2000, 0x206F),
            (0x2070, 0x2BFF),
            (0x2E00, 0x2E7F),
            (0x3000, 0x30FF),
            (0x3100, 0x33FF),
            (0x3400, 0x4DBF),
            (0x4DC0, 0x4DFF),
            (0x4E00, 0x9FFF),
            (0xA000, 0xABFF),
            (0xAC00, 0xD7FF),
            (0xE000, 0xF8FF),
            (0xF900, 0xFAFF),
            (0xFE00, 0xFE6F),
            (0xFF00, 0xFFEF),
            (0xFFF0, 0xFFFF),
            (0x10000, 0x1FFFF),
            (0x1F000, 0x1FAFF),
            (0x20000, 0x2FFFF),
            (0x30000, 0x3134F),
            (0xE0000, 0xE01EF),
        ]
    )
    cp = rnd.randint(lo, hi)
    while 0xD800 <= cp <= 0xDFFF:  # lone surrogates are an input error, tested on their own
        cp = rnd.randint(lo, hi)
    return chr(cp)


def chinese_strings(seed: int = 7, per_kind: int = 600) -> list[str]:
    """At least 10,000 prompts; the same list on every call with the same seed."""
    rnd = random.Random(seed)
    fakers = {}
    for i, locale in enumerate(["zh_CN", "zh_TW", "en_US", "ja_JP", "ko_KR"]):
        fakers[locale] = Faker(locale)
        fakers[locale].seed_instance(seed + i)
    cn, tw, en, ja, ko = (fakers[k] for k in ["zh_CN", "zh_TW", "en_US", "ja_JP", "ko_KR"])

    def zh():
        return rnd.choice([cn, tw])

    def zh_phrase() -> str:
        f = zh()
        return rnd.choice([f.word(), f.word() + f.word(), f.name(), f.city(), f.company(), f.job(), f.color_name()])

    out: list[str] = [
        "",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\u3000",
        "\xa0",
        " \t\r\n\x0b\x0c ",
        "\u2028",
        "\x00",
        "\ufffd",
        "\u200b",
        "[CLS]",
        "[SEP]",
    ]
    out += SPECIAL + GREEK_FINAL_SIGMA + ACCENTED + KANA + HANGUL + CJK_EXTRA + EMOJI + CONTROL
    # Words around the 100-character limit, counted after lowercasing and accent stripping.
    for n in (99, 100, 101, 102, 150, 199, 200, 201, 300):
        out += ["a" * n, "x" * n + " 猫", "é" * n, "ab" * (n // 2) + "c" * (n % 2), "1" * n]
    out.append("İ" * 60)  # lowercases to 120 characters, 60 after accent stripping
    for _ in range(per_kind):
        f = zh()
        # Plain simplified / traditional prose and records.
        out.append(
            rnd.choice(
                [
                    f.sentence(),
                    f.word(),
                    f.name(),
                    f.address(),
                    f.job(),
                    f.company(),
                    f.catch_phrase() if hasattr(f, "catch_phrase") else f.word(),
                    f.text(max_nb_chars=rnd.choice([20, 60, 120])),
                ]
            )
        )
        # Caption-style templates.
        tpl = rnd.choice(TEMPLATES)
        out.append(tpl.format(*(zh_phrase() for _ in range(tpl.count("{}")))))
        # Chinese and English mixed, glued and spaced, in any case.
        parts = [zh_phrase() for _ in range(rnd.randint(1, 3))] + rnd.sample(LATIN_WORDS, rnd.randint(1, 3))
        parts += [en.word(), str(rnd.randint(0, 10 ** rnd.randint(1, 6)))]
        rnd.shuffle(parts)
        out.append(_random_case(rnd.choice(["", " ", "-", "/"]).join(parts), rnd))
        # Full-width punctuation, Latin and digits.
        words = [zh_phrase() for _ in range(rnd.randint(1, 4))]
        words += [_fullwidth(rnd.choice(LATIN_WORDS + [str(rnd.randint(0, 99999)), en.word()]))]
        rnd.shuffle(words)
        out.append("".join(w + "".join(rnd.choices(CN_PUNCT, k=rnd.randint(0, 2))) for w in words))
        out.append(_fullwidth(rnd.choice([en.sentence(), en.name(), f"{en.word()} {rnd.randint(0, 10**6)}!"])))
        # ASCII punctuation glued to Chinese.
        words = [zh_phrase() for _ in range(rnd.randint(1, 5))]
        out.append(" ".join(w + "".join(rnd.choices(ASCII_PUNCT, k=rnd.randint(0, 3))) for w in words))
        # Emoji, alone, glued and spaced.
        words = [zh_phrase() for _ in range(rnd.randint(0, 4))] + rnd.choices(EMOJI, k=rnd.randint(1, 4))
        rnd.shuffle(words)
        out.append(rnd.choice(["", " "]).join(words))
        # Digits: years, prices, decimals, phone numbers, full-width digits.
        out.append(
            rnd.choice(
                [
                    f"{rnd.randint(1900, 2030)}年{rnd.randint(1, 12)}月{rnd.randint(1, 28)}日",
                    f"￥{rnd.randint(1, 9999)}.{rnd.randint(0, 99):02d}元",
                    f"{rnd.random() * 1000:.3f}",
                    cn.phone_number(),
                    f"第{rnd.randint(1, 500)}号",
                    _fullwidth(str(rnd.randint(0, 10**8))),
                    f"{rnd.randint(1, 100)}%的{zh_phrase()}",
                    f"{rnd.randint(0, 99)}:{rnd.randint(0, 59):02d}",
                ]
            )
        )
        # Accents, Greek, Vietnamese, combining marks, next to Chinese.
        words = rnd.sample(ACCENTED, rnd.randint(1, 3)) + [zh_phrase()]
        rnd.shuffle(words)
        out.append(_random_case(rnd.choice(["", " "]).join(words), rnd) if rnd.random() < 0.3 else " ".join(words))
        # Japanese (kanji and kana) and Korean.
        out.append(
            rnd.choice(
                [
                    ja.sentence(),
                    ja.name(),
                    ja.address(),
                    ko.name(),
                    ko.address(),
                    " ".join(rnd.sample(KANA, 2)) + zh_phrase(),
                    "".join(rnd.sample(HANGUL, 2)),
                ]
            )
        )
        # Controls, formats and odd whitespace inside, leading and trailing.
        words = [zh_phrase() for _ in range(rnd.randint(1, 4))] + rnd.sample(LATIN_WORDS, 1)
        text = "".join(w + "".join(rnd.choices(WHITESPACE + CONTROL, k=rnd.randint(0, 2))) for w in words)
        out.append("".join(rnd.choices(WHITESPACE + CONTROL, k=rnd.randint(0, 2))) + text)
        out.append("".join(rnd.choices(WHITESPACE, k=rnd.randint(1, 5))))
        # Rarer CJK, kana, special tokens written in the text.
        words = [zh_phrase() for _ in range(rnd.randint(0, 3))]
        words += rnd.choices(CJK_EXTRA + SPECIAL + KANA, k=rnd.randint(1, 3))
        rnd.shuffle(words)
        out.append(rnd.choice(["", " "]).join(words))
        # Very long texts (well over 52 tokens) and long unbroken words.
        if rnd.random() < 0.6:
            out.append(rnd.choice([f.text(max_nb_chars=400), "".join(f.sentences(nb=12))]))
        else:
            alphabet = rnd.choice(["abcdefghijklmnopqrstuvwxyz", "0123456789", "abcdeéèêëïîôûù", "ΑΒΓΔΕΣαβγδεσς"])
            out.append("".join(rnd.choices(alphabet, k=rnd.randint(60, 260))) + rnd.choice(["", " 猫", "!"]))
        # Random code points from many blocks, glued to Chinese.
        chars = "".join(_random_char(rnd) for _ in range(rnd.randint(1, 6)))
        out.append(rnd.choice([chars, zh_phrase() + chars, chars + " " + zh_phrase()]))
        # Upper and mixed case for the lowercasing step, including Greek capitals.
        out.append(
            _random_case(
                rnd.choice(
                    [
                        en.sentence(),
                        en.name(),
                        rnd.choice(GREEK_FINAL_SIGMA) + zh_phrase(),
                        zh_phrase() + rnd.choice(LATIN_WORDS),
                    ]
                ),
                rnd,
            )
        )
        # Repetition, and the same text with an extra space (both hit the caches).
        unit = rnd.choice(["猫", "哈", "！", " ", "ab", "…", "😀", "。", "##"])
        out.append(unit * rnd.randint(1, 70) + rnd.choice(["", zh_phrase()]))
    return out
