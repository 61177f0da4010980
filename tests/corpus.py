"""Deterministic text corpora for tokenizer tests.

``training_text`` is Russian prose for fitting a youtokentome model;
``test_strings`` is a varied set of prompts (Cyrillic, Latin, digits, emoji,
odd whitespace, unseen scripts, very long and uppercase texts) that a
reimplementation must encode exactly as the reference library does.
Both depend only on their seed and the installed Faker version.
"""

from __future__ import annotations

import random

from faker import Faker

# Separators mixing yttm's word breaks (ASCII isspace, "▁") with Unicode
# spaces it treats as ordinary characters.
WHITESPACE = [
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\r\n",
    "\x0b",
    "\x0c",
    "\r",
    "\u2581",
    " \u2581 ",
    "\xa0",
    "\u2000",
    "\u2002",
    "\u2009",
    "\u200b",
    "\u202f",
    "\u3000",
    "\u2028",
    "\u2029",
    "\x85",
    "\x1c",
    "\x1f",
    "\ufeff",
    "\u1680",
]
EMOJI = ["😀", "🐱", "🚀", "❤️", "👍🏽", "👨‍👩‍👧", "🇷🇺", "🎉", "🔥", "☀", "🌲", "🐶", "🍕", "⚽", "🤖"]
# Scripts and symbols absent from the Russian training text.
UNSEEN = [
    "中文",
    "東京",
    "한국어",
    "العربية",
    "हिन्दी",
    "ελληνικά",
    "שלום",
    "ไทย",
    "ä",
    "ß",
    "ñ",
    "ø",
    "∑",
    "√",
    "∞",
    "≈",
    "€",
    "£",
    "¥",
    "©",
    "™",
    "§",
    "\x00",
    "\x07",
    "\x7f",
    "\ue000",
    "\U0001d400",
    "\U00010348",
    "e\u0301",
    "ﬁ",
    "Ⅻ",
    "½",
    "①",
    "ǅ",
    "İ",
    "ẞ",
]
PUNCTUATION = list(".,;:!?…—–-«»\"'()[]{}<>/\\|@#$%^&*_+=~`№")
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
]


def training_text(seed: int = 0, n_paragraphs: int = 6000, n_records: int = 3000) -> str:
    """Russian prose, names, addresses and job titles, one item a line."""
    fake = Faker("ru_RU")
    fake.seed_instance(seed)
    lines = [fake.text(max_nb_chars=300).replace("\n", " ") for _ in range(n_paragraphs)]
    for _ in range(n_records):
        lines.append(f"{fake.name()}, {fake.address()} {fake.company()} {fake.job()}".replace("\n", " "))
    return "\n".join(lines)


def _with_yo(text: str, rnd: random.Random) -> str:
    # Faker's Russian word lists rarely contain ё, which decides merges differently from е.
    return "".join(("ё" if c == "е" else "Ё" if c == "Е" else c) if rnd.random() < 0.3 else c for c in text)


def _random_case(text: str, rnd: random.Random) -> str:
    style = rnd.randrange(4)
    if style == 0:
        return text.upper()
    if style == 1:
        return text.title()
    if style == 2:
        return text.capitalize()
    return "".join(c.upper() if rnd.random() < 0.5 else c for c in text)


def prompt_strings(seed: int = 1, per_kind: int = 1000) -> list[str]:
    """At least 10,000 prompts; the same list on every call with the same seed."""
    rnd = random.Random(seed)
    fake = Faker("ru_RU")
    fake.seed_instance(seed)
    fake_en = Faker("en_US")
    fake_en.seed_instance(seed)

    def ru_words(k: int) -> list[str]:
        return fake.words(nb=k)

    out: list[str] = ["", " ", "\t", "\n", "\u2581", "\u2581\u2581", " \t\r\n\x0b\x0c ", "\xa0", "\u3000"]
    alphabet = sorted(set("".join(training_text(seed=seed, n_paragraphs=50, n_records=50).split())))
    for _ in range(per_kind):
        # Plain Russian prompts of the usual shapes.
        out.append(
            rnd.choice(
                [
                    fake.sentence(),
                    fake.word(),
                    fake.name(),
                    fake.address(),
                    fake.job(),
                    f"фото {fake.word()}",
                    f"изображение {fake.word()} {fake.word()}",
                ]
            )
        )
        # ё / Ё.
        out.append(_with_yo(fake.sentence(nb_words=rnd.randint(2, 12)), rnd))
        # Latin, digits and Cyrillic mixed.
        parts = ru_words(rnd.randint(1, 4)) + rnd.sample(LATIN_WORDS, rnd.randint(1, 3))
        parts += [str(rnd.randint(0, 10 ** rnd.randint(1, 7))), fake_en.word()]
        rnd.shuffle(parts)
        out.append(" ".join(parts))
        # Punctuation glued to words and standing alone.
        words = ru_words(rnd.randint(1, 8))
        out.append(" ".join(w + "".join(rnd.choices(PUNCTUATION, k=rnd.randint(0, 3))) for w in words))
        # Emoji, alone, glued and spaced.
        words = ru_words(rnd.randint(0, 5)) + rnd.choices(EMOJI, k=rnd.randint(1, 4))
        rnd.shuffle(words)
        out.append(rnd.choice(["", " "]).join(words))
        # Whitespace runs of every kind, inside, leading and trailing.
        words = ru_words(rnd.randint(1, 6))
        text = "".join(w + "".join(rnd.choices(WHITESPACE, k=rnd.randint(1, 3))) for w in words)
        out.append("".join(rnd.choices(WHITESPACE, k=rnd.randint(0, 2))) + text)
        out.append("".join(rnd.choices(WHITESPACE, k=rnd.randint(1, 6))))
        # Characters never seen in training, in runs and between known ones.
        words = ru_words(rnd.randint(1, 4)) + rnd.choices(UNSEEN, k=rnd.randint(1, 4))
        rnd.shuffle(words)
        out.append(rnd.choice(["", " ", "-"]).join(words))
        # Long texts, well over 200 tokens, and long words without spaces.
        if rnd.random() < 0.5:
            out.append(" ".join(fake.paragraph(nb_sentences=25) for _ in range(2)))
        else:
            out.append("".join(rnd.choices(alphabet, k=rnd.randint(100, 600))))
        # Uppercase and mixed case, for the lowercasing step.
        out.append(_random_case(rnd.choice([fake.sentence(), _with_yo(fake.name(), rnd), fake.job()]), rnd))
        # Repeated characters and syllables: overlapping pairs of one rule.
        unit = rnd.choice(["а", "о", "аб", "ана", "ё", "!", "по", " ", "ла-"])
        out.append(unit * rnd.randint(2, 40) + rnd.choice(["", " " + fake.word()]))
    return out
