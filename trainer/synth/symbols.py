"""Families of symbols as non-digits -- maths, arrows, card suits, check and cross marks, punctuation,
brackets, geometric shapes, currency, emoji-like pictographs -- each printed in the DejaVu faces that have the
glyph and, where a pen draws it, as pen strokes (Hershey's symbol fonts, or strokes drawn here), on every
surface; deterministic by seed.

A family is what a model trains on or is held out from as a whole (trainer.synth.negatives.KINDS). A glyph a
reader could take for a digit is in no family: LEFT_OUT and PEN_LEFT_OUT say which, and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from trainer.synth import Rng
from trainer.synth.exports import upload
from trainer.synth.ink import FONT_DIR, PEN_FONTS, Strokes, hershey_strokes, pen_ink, printable, printed_ink
from trainer.synth.paper import encode

# --- what no family draws -----------------------------------------------------------------------------------

# Printed glyphs a reader could take for a digit, by the digit (or the reason): never negatives. Letters are
# left out in trainer.synth.negatives.AMBIGUOUS.
LEFT_OUT = {
    "0: rings, discs and boxes (a seven-segment 0), dotted and slashed zeros": "○◯●◎◉⊙⊚☉°∘•∅⊘⊖□■▢▣☐⬟⬠⬡⬢¤☄",
    "1: bars, staffs, flags on a pole, upright arrows, a stem with a flag or a foot": (
        "|¦!¡‼⁉⁈/\\∖‖⌉⊥↑↓↕⇑⇓⇕⚑⚐✎✐⚕☤"
    ),
    "2: a zig-zag, a diagonal on a base": "⚡↙",
    "3: a squared 3, ε and э shapes": "∃∄∈∉∊∋∌∍",
    "4: Jupiter and the natural sign are drawn like one": "♃♮",
    "5: an S with strokes": "$§₴",
    "6: b, G and ∂ shapes": "∂♭₲",
    "7: a bar and a diagonal": "¬⌐↗",
    "8: two stacked loops, a seven-segment 8, B with strokes": "☃♉⌛⧗⊟₿฿₰",
    "6 or 9: a loop on a tail (α-like), two curls": "∝⚘♌♑♋",
    "0, 6 or 9: an open ring with an arrowhead": "↺↻⟲⟳",
    "1 or S: integrals": "∫∬∭∮",
    "0 or 1: dots, commas and quotes, a blob or a tick once the pipeline has cropped and scaled them": (
        ".,:;'\"`´‘’“”„·…∴∵"
    ),
    "5: ₨ is Rs (letters leave out s)": "₨",
    "0: a dense starburst is a filled disc (•)": "✹✺",
}

# Pen glyphs left out, by Hershey font and ASCII key (besides the letters and digits of every font that draws
# letters and digits at those keys): what each draws, and the digit.
PEN_LEFT_OUT = {
    "mathlow": "$`^hvmpqjlyz,/\\~",  # □ ○ (0); ∝ (9); ∈ ∃ (3); ∂ (6); ∫ (1 or S); ↑ ↓ ‖ ⊥ / \ (1);
    # a hook (9); ∴ (dots)
    "symbolic": "AHIPQdeuvVist!\"#$%&'()*,-./0123456789",  # octagons, ○ □, hatched rings and boxes (0);
    # two blobs (0); √ drawn as a hooked 1; an S (5); a flag on a pole (1); §; ∫ (1); single strokes and arcs
    "markers": "ABJKabjk",  # ○ □ and hatched ones (0)
    "astrology": "#*-<>_?[^},",  # ⊙ (0); ♃ (4); a dotted ring, a comet (0); ♌ ♑ (6 or 9); ♉ (8); ♋;
    # a hook (9)
    "music": "!,-.=</)($%&",  # ! (1); rests (2, 7, 3); clefs (9, 6); ♭ (6); ♮ (4); note heads (0, •)
}

# --- pen strokes drawn here ---------------------------------------------------------------------------------


def _segment(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y1)], np.float32)


def _turned(strokes: Strokes, degrees: float) -> Strokes:
    a = np.radians(degrees)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return [s @ rotation.T for s in strokes]


def _head(rng: Rng, tip: np.ndarray, closed: bool, sign: float) -> np.ndarray:
    """An arrowhead at `tip`, pointing along +x (sign 1) or -x (sign -1): open (two arms) or a triangle."""
    angle, length = np.radians(rng.uniform(20, 45)), rng.uniform(0.12, 0.3)
    back = np.array([-sign * length * np.cos(angle), length * np.sin(angle)])
    arms = [tip + back * (1, -1), tip, tip + back]
    return np.array([*arms, arms[0]] if closed else arms, np.float32)


def arrow_strokes(rng: Rng) -> Strokes:
    """A hand-drawn arrow: a straight, wavy or bent shaft (or two, as in ⇒), an open or closed head, sometimes
    one at each end or a bar at the tail; pointing left or right at most 20 degrees off the horizontal.
    Steeper (with pen_ink's own tilt), a head and shaft are a 7 or a 1 with a flag."""
    t = np.linspace(0, 1, 40)
    style = rng.integers(3)
    height = rng.uniform(0.05, 0.15)
    y = [np.zeros_like(t), height * np.sin(2 * np.pi * t * rng.integers(2, 5)), 4 * height * t * (1 - t)][
        style
    ]
    double = style == 0 and rng.random() < 0.25
    gap = rng.uniform(0.04, 0.08)
    shafts = [np.stack([t, y + dy], 1) for dy in ((-gap, gap) if double else (0.0,))]
    closed = rng.random() < 0.3
    strokes = [*shafts, _head(rng, np.array([1.0, y[-1]]), closed, 1)]
    ends = rng.random()
    if ends < 0.2:  # a head at each end, as ↔
        strokes.append(_head(rng, np.array([0.0, y[0]]), closed, -1))
    elif ends < 0.3:  # a bar at the tail, as ↦
        strokes.append(_segment(0, -0.12, 0, 0.12))
    if rng.random() < 0.5:
        strokes = [s * (-1, 1) for s in strokes]
    return _turned(strokes, rng.uniform(-20, 20))


def mark_strokes(rng: Rng) -> Strokes:
    """A hand-drawn tick or cross (straight or curved strokes), alone or in or over a box."""
    if rng.random() < 0.5:  # a tick: a short stroke down to the corner, a long one up
        corner = (rng.uniform(0.25, 0.45), 1.0)
        start, end = (0.0, rng.uniform(0.4, 0.7)), (1.0, rng.uniform(-0.1, 0.1))
        bow = rng.uniform(-0.08, 0.08)
        middle = ((corner[0] + end[0]) / 2 + bow, (corner[1] + end[1]) / 2 + bow)
        mark = [np.array([start, corner, middle, end], np.float32)]
    else:  # a cross: two strokes, each a little bent
        mark = [
            np.array(
                [(0, 0), (0.5 + rng.uniform(-0.1, 0.1), 0.5 + rng.uniform(-0.1, 0.1)), (1, 1)], np.float32
            ),
            np.array(
                [(1, 0), (0.5 + rng.uniform(-0.1, 0.1), 0.5 + rng.uniform(-0.1, 0.1)), (0, 1)], np.float32
            ),
        ]
        mark = [s * (1, rng.uniform(0.7, 1.3)) for s in mark]
    if rng.random() < 0.35:  # in a box, or a tick over its corner
        inset = rng.uniform(-0.15, 0.2)
        box = np.array([(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)], np.float32) * (1 - 2 * inset) + inset
        return [box, *mark]
    return mark


# Currency signs as people write them: a letter and its bars, as (x0, y0, x1, y1) in the letter's box (0..1,
# y down).
OVERSTRUCK = {
    "€": ("C", ((-0.2, 0.42, 0.7, 0.42), (-0.2, 0.6, 0.7, 0.6))),
    "£": ("L", ((-0.15, 0.55, 0.6, 0.55),)),
    "¥": ("Y", ((0.15, 0.6, 0.85, 0.6), (0.15, 0.78, 0.85, 0.78))),
    "¢": ("c", ((0.55, -0.3, 0.45, 1.3),)),
    "₽": ("P", ((-0.25, 0.78, 0.65, 0.78),)),
    "₩": ("W", ((-0.1, 0.38, 1.1, 0.38), (-0.1, 0.6, 1.1, 0.6))),
    "₦": ("N", ((-0.15, 0.38, 1.15, 0.38), (-0.15, 0.62, 1.15, 0.62))),
    "₱": ("P", ((-0.2, 0.15, 1.1, 0.15), (-0.2, 0.32, 1.1, 0.32))),
    "₵": ("C", ((0.55, -0.2, 0.55, 1.2),)),
    "₭": ("K", ((-0.2, 0.5, 0.8, 0.5),)),
    "₤": ("L", ((-0.15, 0.5, 0.6, 0.5), (-0.15, 0.66, 0.6, 0.66))),
    "₣": ("F", ((-0.25, 0.78, 0.5, 0.78),)),
    "₳": ("A", ((-0.05, 0.45, 1.05, 0.45), (-0.1, 0.65, 1.1, 0.65))),
    "₮": ("T", ((0.2, 0.55, 0.8, 0.4), (0.2, 0.75, 0.8, 0.6))),
    "₸": ("T", ((0.0, -0.18, 1.0, -0.18),)),
    "₡": ("C", ((0.3, 1.15, 0.5, -0.15), (0.55, 1.15, 0.75, -0.15))),
}


def currency_strokes(rng: Rng) -> Strokes:
    """A currency sign written by hand: a letter of a Hershey font with its bars (OVERSTRUCK)."""
    letter, bars = OVERSTRUCK[list(OVERSTRUCK)[rng.integers(len(OVERSTRUCK))]]
    strokes = hershey_strokes(PEN_FONTS[rng.integers(len(PEN_FONTS))], letter)
    points = np.concatenate(strokes)
    low, size = points.min(0), np.ptp(points, axis=0)
    return strokes + [_segment(*(low + size * (x0, y0)), *(low + size * (x1, y1))) for x0, y0, x1, y1 in bars]


# --- the families -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """Glyphs to print (each in the DejaVu faces that have it), and what a pen draws of them."""

    printed: str
    hershey: tuple[tuple[str, str], ...] = ()  # (Hershey font, ASCII keys of its glyphs of the family)
    drawn: Callable[[Rng], Strokes] | None = None  # pen strokes drawn here where no Hershey font has them


MATH = Family(
    "±∓×÷√∑∏∞≤≥≈≠∇∀∩∪⊂⊃⊆⊇⊄⊅⊊⊋⊕⊗⊞⊠∧∨∠≅∼≃∆⊤⊢⊣≪≫≺≻≮≯≰≱+=<>~^−⋄≡",
    # ± ∓ × ≤ ≥ + − Π Σ < = > ≠ ≡ ∞ √ √ ⊂ ∪ ⊃ ∩ ∇ ÷ ∠ √ ◇; and + = < > ~ in every Latin stroke font
    (("mathlow", "!\"#&'+-:;<=>?@_bcdefgnx|o."), *((font, "+=<>~") for font in PEN_FONTS)),
)
ARROWS = Family(
    "←→↔⇒⇐⇔⟶⟵⟷⟹⟸⟺➔➜➝➞➡⬅↦↤⇄⇆⇌⇋↝↜↭↣↢⇀↼⇁↽↘↖⇢⇠➤↬↫⇝⇜↩↪↵⇨⇦⬄⇾⇽⟼⟻⬌",
    (("mathlow", "ik"),),  # → ←
    arrow_strokes,
)
CARD_SUITS = Family("♠♣♥♦♤♧♡♢", (("symbolic", "mnop"),))  # ♠ ♥ ♦ ♣
CHECK_MARKS = Family("✓✔✗✘☑☒✕✖⨯", drawn=mark_strokes)
PUNCTUATION = Family(
    "%&@#?*‰‱†‡¶※¿‽⁇⸮⁂«»‹›-–—_✱",
    # % & @ # ? * - in every Latin stroke font; † ‡; an asterisk
    (*((font, "%&@#?*-") for font in PEN_FONTS), ("symbolic", "jk"), ("mathupp", "a")),
)
BRACKETS = Family(
    "()[]{}⟨⟩⟦⟧⌈⌊⌋⁅⁆❨❩❪❫❬❭❮❯❰❱❲❳❴❵",
    (*((font, "()[]{}") for font in PEN_FONTS), ("mathlow", "rstu{}"), ("symbolic", "qr")),
)
GEOMETRIC_SHAPES = Family(
    "▲▼◆◇△▽◁▷▶◀◊◈▰▱◢◣◤◥◬◭◮",
    # triangles, nested triangles, rhombi, a Greek cross
    (("symbolic", "GJKRSTU^"), ("markers", "CDFLMNOPcdflmnop")),
)
CURRENCY = Family("€£¥¢₽₩₪₹₺₦₱₡₵₫₭₮₣₤₥₧₠₢₯₳ƒ₸", drawn=currency_strokes)
EMOJI_LIKE = Family(
    "☺☻☹★☆✩✪✫✬✭✮✯✰✴✵✶✷✸♪♫♬♩☀☼☁☂☔✿❀❁❃❋✾☎☏✈✉✂✏☕⚓☘♔♕♖♗♘♙♚♛♜♝♞♟☯☮☢☣♻☠❄❅❆✌☝☞☜"
    "♈♊♍♎♏♐♒♓☿♀♂♄♅♆♇⚢⚣⚤⚥⚖⚗⚙⚛⚜☸✡☪☬☭✠☽☾",
    (
        (
            "symbolic",
            "L~`habcWX_",
        ),  # stars, a shamrock, a bell, a palm, a fir tree, a boat, an anchor, a moon
        ("markers", "Ee"),  # stars
        ("astrology", "!$%'+/:;@]`{|~"),  # planets and signs of the zodiac, a moon
        ("music", ";"),  # a treble clef
    ),
)

PEN_SHARE = 0.5  # of a family's images, where a pen draws the family: the rest are printed
PAIR_SHARE = 0.25  # of the printed ones: two glyphs of the family side by side


def _printed_text(rng: Rng, glyphs: str) -> str:
    first = str(rng.choice(list(glyphs)))
    if rng.random() >= PAIR_SHARE:
        return first
    return first + str(rng.choice([g for g in glyphs if printable(first + g)]))


def _pen_strokes(rng: Rng, family: Family) -> Strokes:
    if family.drawn is not None and (not family.hershey or rng.random() < 0.5):
        return family.drawn(rng)
    font, keys = family.hershey[rng.integers(len(family.hershey))]
    return hershey_strokes(font, "".join(rng.choice(list(keys), size=rng.choice([1, 1, 1, 2]))))


def draw(family: Family, rng: Rng) -> bytes:
    """One symbol (sometimes two) of the family, printed, or drawn by pen where a pen draws the family; on any
    surface."""
    if (family.hershey or family.drawn is not None) and rng.random() < PEN_SHARE:
        return upload(rng, pen_ink(rng, _pen_strokes(rng, family), int(rng.integers(60, 200))))
    return upload(rng, printed_ink(rng, _printed_text(rng, family.printed), int(rng.integers(40, 160))))


# --- a fixture ----------------------------------------------------------------------------------------------

LARGE_SYMBOLS = "≈≠→♦♣%"  # model 2.0.0 read them as 2, 7, 7, 0, 2 and 6
LARGE_FACES = {
    "DejaVu Sans": "DejaVuSans.ttf",
    "DejaVu Serif": "DejaVuSerif.ttf",
    "DejaVu Sans Mono": "DejaVuSansMono.ttf",
}


def large_symbols() -> dict[str, bytes]:
    """The printed symbols as a new user first tries them: 140 px in DejaVu Sans, Serif and Mono, near-black,
    centred on a light 320 px page; name ("≈ DejaVu Sans") -> PNG file."""
    files = {}
    for face, file in LARGE_FACES.items():
        font = ImageFont.truetype(str(FONT_DIR / file), size=140)
        for symbol in LARGE_SYMBOLS:
            page = Image.new("RGB", (320, 320), (246, 245, 240))
            ImageDraw.Draw(page).text((160, 160), symbol, fill=(20, 20, 20), font=font, anchor="mm")
            files[f"{symbol} {face}"] = encode(page, "PNG")
    return files
