"""The demo data's Russian vocabulary: colours, shapes, sizes and backgrounds with their inflected forms.

Zero-shot labels are nominative forms (masculine for colours); the templates
take a label as is. Compositional hold-out: :data:`HELD_OUT_COMBOS` lists the
(colour, shape) pairs that training never draws.
"""

from __future__ import annotations

# Adjective endings by declension type: case -> (masculine, feminine, neuter).
# Inanimate nouns only, so the masculine accusative equals the nominative.
_HARD = {
    "nom": ("ый", "ая", "ое"),
    "gen": ("ого", "ой", "ого"),
    "acc": ("ый", "ую", "ое"),
    "ins": ("ым", "ой", "ым"),
    "prep": ("ом", "ой", "ом"),
}
_STRESSED = dict(_HARD, nom=("ой", "ая", "ое"), acc=("ой", "ую", "ое"))  # голубой
_SOFT = {
    "nom": ("ий", "яя", "ее"),
    "gen": ("его", "ей", "его"),
    "acc": ("ий", "юю", "ее"),
    "ins": ("им", "ей", "им"),
    "prep": ("ем", "ей", "ем"),
}  # синий
_GENDER_INDEX = {"m": 0, "f": 1, "n": 2}


def _adjective(stem: str, endings: dict) -> dict:
    return {(case, g): stem + endings[case][i] for case in endings for g, i in _GENDER_INDEX.items()}


# name (nominative masculine, the zero-shot label) -> (reference RGB, declension)
_COLOUR_TABLE = {
    "красный": ((215, 35, 35), _adjective("красн", _HARD)),
    "оранжевый": ((250, 135, 20), _adjective("оранжев", _HARD)),
    "жёлтый": ((245, 215, 30), _adjective("жёлт", _HARD)),
    "зелёный": ((40, 160, 60), _adjective("зелён", _HARD)),
    "голубой": ((85, 195, 240), _adjective("голуб", _STRESSED)),
    "синий": ((30, 55, 200), _adjective("син", _SOFT)),
    "фиолетовый": ((135, 55, 185), _adjective("фиолетов", _HARD)),
    "розовый": ((245, 120, 185), _adjective("розов", _HARD)),
}

# name (nominative, the zero-shot label) -> (gender, {case: form})
_SHAPE_TABLE = {
    "круг": ("m", dict(nom="круг", gen="круга", acc="круг", ins="кругом", prep="круге")),
    "квадрат": ("m", dict(nom="квадрат", gen="квадрата", acc="квадрат", ins="квадратом", prep="квадрате")),
    "треугольник": (
        "m",
        dict(nom="треугольник", gen="треугольника", acc="треугольник", ins="треугольником", prep="треугольнике"),
    ),
    "звезда": ("f", dict(nom="звезда", gen="звезды", acc="звезду", ins="звездой", prep="звезде")),
    "кольцо": ("n", dict(nom="кольцо", gen="кольца", acc="кольцо", ins="кольцом", prep="кольце")),
    "крест": ("m", dict(nom="крест", gen="креста", acc="крест", ins="крестом", prep="кресте")),
    "ромб": ("m", dict(nom="ромб", gen="ромба", acc="ромб", ins="ромбом", prep="ромбе")),
    "сердце": ("n", dict(nom="сердце", gen="сердца", acc="сердце", ins="сердцем", prep="сердце")),
}

# Size words, used in captions only for clearly small or large shapes.
_SIZE_TABLE = {
    "маленький": {
        ("nom", "m"): "маленький",
        ("nom", "f"): "маленькая",
        ("nom", "n"): "маленькое",
        ("gen", "m"): "маленького",
        ("gen", "f"): "маленькой",
        ("gen", "n"): "маленького",
        ("acc", "m"): "маленький",
        ("acc", "f"): "маленькую",
        ("acc", "n"): "маленькое",
        ("ins", "m"): "маленьким",
        ("ins", "f"): "маленькой",
        ("ins", "n"): "маленьким",
    },
    "большой": {
        ("nom", "m"): "большой",
        ("nom", "f"): "большая",
        ("nom", "n"): "большое",
        ("gen", "m"): "большого",
        ("gen", "f"): "большой",
        ("gen", "n"): "большого",
        ("acc", "m"): "большой",
        ("acc", "f"): "большую",
        ("acc", "n"): "большое",
        ("ins", "m"): "большим",
        ("ins", "f"): "большой",
        ("ins", "n"): "большим",
    },
}

# Background kind -> prepositional adjective for "на ... фоне".
_BACKGROUND_TABLE = {
    "white": "белом",
    "black": "чёрном",
    "gray": "сером",
    "noise": "зашумлённом",
    "gradient": "градиентном",
}

COLOURS: tuple[str, ...] = tuple(_COLOUR_TABLE)
SHAPES: tuple[str, ...] = tuple(_SHAPE_TABLE)
BACKGROUNDS: tuple[str, ...] = tuple(_BACKGROUND_TABLE)
SIZES: tuple[str, ...] = ("small", "medium", "large")

#: Zero-shot labels: nominative forms, masculine for colours.
COLOUR_LABELS: tuple[str, ...] = COLOURS
SHAPE_LABELS: tuple[str, ...] = SHAPES
#: Prompt templates for the zero-shot tasks; "{}" takes a label as is.
SHAPE_TEMPLATES: tuple[str, ...] = ("{}", "это {}", "на картинке {}")
COLOUR_TEMPLATES: tuple[str, ...] = ("{}", "{} цвет", "{} предмет")

#: Templates for joint colour+shape labels made by :func:`pair_label` ("красная звезда").
PAIR_TEMPLATES: tuple[str, ...] = ("{}", "это {}", "на картинке {}")

ALL_COMBOS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
#: Never drawn for training: each colour and each shape appears exactly once.
HELD_OUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("красный", "звезда"),
    ("оранжевый", "квадрат"),
    ("жёлтый", "кольцо"),
    ("зелёный", "треугольник"),
    ("голубой", "сердце"),
    ("синий", "круг"),
    ("фиолетовый", "ромб"),
    ("розовый", "крест"),
)
SEEN_COMBOS: tuple[tuple[str, str], ...] = tuple(c for c in ALL_COMBOS if c not in set(HELD_OUT_COMBOS))


def reference_rgb(colour: str) -> tuple[int, int, int]:
    """The RGB a named colour is drawn around (each image jitters it)."""
    return _COLOUR_TABLE[colour][0]


def noun_phrase(case: str, colour: str | None, shape: str, size: str | None) -> str:
    """Noun phrase "[size] [colour] shape" in ``case``, with agreement."""
    gender, forms = _SHAPE_TABLE[shape]
    words = []
    if size is not None:
        words.append(_SIZE_TABLE[size][case, gender])
    if colour is not None:
        words.append(_COLOUR_TABLE[colour][1][case, gender])
    words.append(forms[case])
    return " ".join(words)


def pair_label(colour: str, shape: str) -> str:
    """Nominative "colour shape" with agreement: ("красный", "звезда") -> "красная звезда"."""
    return noun_phrase("nom", colour, shape, None)


def colour_word(case: str, gender: str, colour: str) -> str:
    """The colour adjective in ``case`` and ``gender`` ("m", "f" or "n")."""
    return _COLOUR_TABLE[colour][1][case, gender]


def shape_gender(shape: str) -> str:
    """The grammatical gender of a shape's noun: "m", "f" or "n"."""
    return _SHAPE_TABLE[shape][0]


def background_phrase(background: str) -> str:
    """The prepositional adjective for "на ... фоне" ("on a ... background")."""
    return _BACKGROUND_TABLE[background]
