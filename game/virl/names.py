"""Fresh place and street names for the synthetic training cities (`game.virl.cities`).

Owns the name generator of the V-IRL-L base corpus. Its purpose is that *copying* a name out of
the instruction is the skill a model learns, never recalling one: every city draws its own names,
from a space far too large to memorise, with the shapes real shop signs have (the evaluation map's
names are Finnish, Swedish, English, Italian …, one to ten words, with `'s`, `&`, `-`, `/`, `+`,
`!`, `.`, digits, parentheses, all-capital acronyms, lower-case second words and accented letters):

- a *core* word from one of several syllable styles (Finnish-, Nordic-, Romance-, English-,
  Vietnamese-like syllables, all-capital acronyms, "word-word" doubles, initials);
- optionally a type word for the place's kind, in one of several languages (`Cafe`, `Kahvila`,
  `Trattoria` …: ordinary vocabulary a pretrained model would know, never a place name) before or
  after it, a second core, a lower-case word, `&` / `+` / `/` joins, a number, a parenthesised
  district, `'s`, `!`.

Nothing is taken from the evaluation map: `NameGenerator(seed, avoid=…)` never returns a name in
`avoid` (case-insensitive), and never a word of length ≥ 4 that occurs in an avoided name unless it
is one of our own type words (`helsinki_names()` gives the bundled Helsinki map's names, which
`game.virl.cities` avoids). Deterministic for a seed.

    gen = NameGenerator(3, avoid=helsinki_names())
    gen.place("cafe"), gen.place("tourism:artwork"), gen.street()
"""
from __future__ import annotations

import random
from functools import lru_cache

from .datasets import _bundled_features

# ---- syllable styles ----------------------------------------------------------------------------
_FI_C = ("k", "l", "m", "n", "p", "r", "s", "t", "v", "h", "j", "kk", "tt", "ss", "ll", "nn", "pp")
_FI_V = ("a", "e", "i", "o", "u", "y", "ä", "ö", "aa", "ee", "ii", "uu", "ää", "ai", "ei", "ou", "ie", "uo", "yö")
_FI_END = ("nen", "la", "lä", "kka", "nti", "sto", "lan", "inen", "ola", "ila", "ntie", "mäki", "järvi", "koski",
           "nkatu", "puisto", "vaara", "saari", "niemi", "ranta", "lahti", "harju", "talo", "pää")
_NO_START = ("Al", "Ber", "Dal", "Ek", "Fal", "Gran", "Hag", "Is", "Karl", "Lind", "Mal", "Nor", "Ros", "Sand",
             "Sjö", "Ström", "Tor", "Vall", "Ås", "Öst", "Björk", "Hell", "Fjäll", "Sol", "Stor", "Lill")
_NO_END = ("berg", "ström", "lund", "qvist", "sson", "gård", "holm", "dahl", "vik", "by", "stad", "näs",
           "ö", "sund", "hult", "mark", "fors", "rud", "vall", "sten")
_RO_C = ("b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "gn", "br", "tr", "st")
_RO_V = ("a", "e", "i", "o", "u", "ia", "io", "é", "è", "á", "ó", "ue")
_RO_END = ("ino", "ella", "ezza", "ario", "ita", "ado", "eria", "etta", "ona", "iere", "ez", "ero", "anza",
           "eau", "ette", "ón", "ía", "ier", "otte", "ucci")
_EN_WORDS = ("Golden", "Corner", "Blue", "Little", "Green", "Old", "Royal", "Urban", "Lucky", "Silver", "Wild",
             "Crown", "River", "Garden", "Stone", "Maple", "Amber", "Copper", "Velvet", "Harbour", "North",
             "Iron", "Rose", "Cedar", "Willow", "Falcon", "Anchor", "Lantern", "Meadow", "Orchard", "Pepper",
             "Saffron", "Thistle", "Bramble", "Compass", "Juniper", "Marble", "Quill", "Rusty", "Salty",
             "Sunny", "Tiny", "Twin", "Violet", "Wooden", "Yellow", "Zesty", "Bright", "Brick", "Clover",
             "Dapper", "Ember", "Fable", "Gentle", "Honey", "Ivory", "Jolly", "Kettle", "Lemon", "Mint",
             "Noble", "Olive", "Plum", "Quiet", "Ruby", "Scarlet", "Tulip", "Umber", "Vivid", "Wander",
             "Crimson", "Daisy", "Echo", "Frost", "Ginger", "Hazel", "Indigo", "Jasper", "Kestrel", "Lark")
_EN_LOWER = ("house", "corner", "room", "club", "point", "studio", "works", "lab", "hall", "spot", "deli",
             "edge", "box", "yard", "market", "kitchen", "garden", "gallery", "company", "station", "lounge",
             "salon", "shop", "bar", "cafe", "bistro", "store", "atelier", "co", "kauppa", "kahvila", "baari")
_VI_SYL = ("Ngọc", "Phở", "Bình", "Hương", "Mỹ", "Đức", "Sài", "Gòn", "Hạnh", "Thủy", "Lê", "Việt", "Hải",
           "Quán", "Ăn", "Ở", "Nhà", "Tâm", "Lộc", "Phúc")
_FIRST = ("Mara", "Iiro", "Teodor", "Selma", "Nilo", "Ansa", "Ruben", "Veera", "Oskari", "Elin", "Dario",
          "Ines", "Kalle", "Ulla", "Pietro", "Noora", "Lauri", "Greta", "Emil", "Sofia", "Milo", "Aada",
          "Viktor", "Hilda", "Joel", "Linnea", "Matti", "Ronja", "Hugo", "Tilda", "Jaakko", "Lotta",
          "Bruno", "Iris", "Aarne", "Stella", "Otso", "Frida", "Vilho", "Maja", "Leon", "Alva")

# Type words, in several languages: ordinary vocabulary, never a place's name.
TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "restaurant": ("Restaurant", "Ravintola", "Kitchen", "Grill", "Diner", "Bistro", "Trattoria", "Pizzeria",
                   "Sushi", "Ramen", "Taverna", "Brasserie", "Kebab", "Burger", "Noodle Bar", "Curry House"),
    "cafe": ("Cafe", "Café", "Coffee", "Kahvila", "Espresso", "Konditori", "Tea Room", "Roastery"),
    "bar": ("Bar", "Pub", "Tavern", "Baari", "Taproom", "Wine Bar", "Lounge", "Brewery", "Karaoke"),
    "bank": ("Bank", "Pankki", "Savings Bank", "Credit Union", "Banca"),
    "bakery": ("Bakery", "Leipomo", "Bageri", "Boulangerie", "Panetteria"),
    "supermarket": ("Market", "Supermarket", "Food Market", "Mercato", "Lähikauppa"),
    "convenience_store": ("Mini Market", "Corner Shop", "Kiosk", "Kioski", "Express", "24h"),
    "pharmacy": ("Pharmacy", "Apteekki", "Apotek", "Farmacia", "Chemist"),
    "hospital": ("Clinic", "Hospital", "Sairaala", "Medical Centre", "Klinikka"),
    "spa": ("Spa", "Beauty", "Day Spa", "Sauna", "Wellness", "Kauneushoitola"),
    "school": ("School", "Koulu", "Academy", "Skola", "Institute"),
    "library": ("Library", "Kirjasto", "Bibliotek", "Reading Room"),
    "park": ("Park", "Puisto", "Gardens", "Parken", "Square"),
    "lodging": ("Hotel", "Hostel", "Inn", "Hotelli", "Suites", "Guesthouse", "Apartments"),
    "laundry": ("Laundry", "Pesula", "Dry Cleaning", "Laundromat", "Tvätt"),
    "movie_theater": ("Cinema", "Kino", "Elokuvateatteri", "Movies", "Picture House"),
    "book_store": ("Books", "Kirjakauppa", "Bookshop", "Antikvariaatti", "Libreria"),
    "clothing_store": ("Fashion", "Boutique", "Vaatteet", "Atelier", "Outlet", "Denim", "Store"),
    "jewelry_store": ("Jewellers", "Kulta", "Jewelry", "Gold", "Diamonds", "Kultaseppä"),
    "gym": ("Gym", "Fitness", "Kuntosali", "Boxing Club", "Yoga", "CrossFit"),
}
LANDMARK_WORDS = ("Gallery", "Galleria", "Studio", "Salon", "Parturi", "Optiikka", "Optician", "Kukka",
                  "Flowers", "Embassy", "Theatre", "Teatteri", "Museum", "Museo", "Church", "Kirkko",
                  "Statue", "Monument", "Fountain", "Parking", "ATM", "Kaupunkipyörät", "Design", "Interior",
                  "Shoes", "Kengät", "Sports", "Toys", "Lelut", "Antiques", "Gifts", "Mobile", "Travel",
                  "Dentist", "Hammaslääkäri", "Nightclub", "Florist", "Tattoo", "Records", "Vintage", "Art",
                  "Music", "Games", "Optics", "Print", "Photo", "Bikes", "Kiosk", "Shop", "Store")
STREET_WORDS = ("katu", "tie", "kuja", "polku", "väylä", "gatan", "vägen", "gränd")
STREET_SUFFIX = (" Street", " Road", " Avenue", " Lane", " St", " Rd", " Boulevard", " Way", " Esplanade")
STREET_PREFIX = ("Via ", "Rue ", "Calle ", "Avenida ", "Piazza ")
_GENERIC = {"the", "and", "de", "la", "le", "del", "di", "da", "du", "of", "&", "+", "/", "-"}


def _cap(word: str) -> str:
    return word[:1].upper() + word[1:]


class NameGenerator:
    """Seeded fresh names (see the module doc); `avoid`: names never to produce, with their words."""

    def __init__(self, seed, avoid: "set[str] | frozenset[str]" = frozenset()) -> None:
        self.rng = random.Random(f"virl-names:{seed}")
        self.avoid = {a.casefold() for a in avoid}
        own = {w.casefold() for words in TYPE_WORDS.values() for t in words for w in t.split()}
        own |= {w.casefold() for w in LANDMARK_WORDS} | _GENERIC
        self.avoid_words = {w.casefold().strip("!.'()") for a in avoid for w in a.replace("-", " ").split()
                            if len(w) >= 4} - own
        self.used: set[str] = set()

    # ---- cores ----------------------------------------------------------------------------
    def _finnish(self) -> str:
        r = self.rng
        w = r.choice(_FI_C)[0] + r.choice(_FI_V)           # a word starts with one consonant
        w += "".join(r.choice(_FI_C) + r.choice(_FI_V) for _ in range(r.randint(0, 2)))
        if r.random() < 0.6:
            w += r.choice(_FI_END)
        return _cap(w[1:] if r.random() < 0.2 else w)

    def _nordic(self) -> str:
        r = self.rng
        return r.choice(_NO_START) + r.choice(_NO_END)

    def _romance(self) -> str:
        r = self.rng
        w = "".join(r.choice(_RO_C) + r.choice(_RO_V) for _ in range(r.randint(1, 2))) + r.choice(_RO_END)
        return _cap(w)

    def _english(self) -> str:
        return self.rng.choice(_EN_WORDS)

    def _acronym(self) -> str:
        r = self.rng
        return "".join(r.choice("ABCDEFGHIJKLMNOPRSTUVWXYZÅÄÖ") for _ in range(r.randint(2, 4)))

    def _vietnamese(self) -> str:
        r = self.rng
        return " ".join(r.choice(_VI_SYL) for _ in range(r.randint(1, 2)))

    def core(self) -> str:
        r = self.rng
        x = r.random()
        if x < 0.30:
            w = self._finnish()
        elif x < 0.42:
            w = self._nordic()
        elif x < 0.60:
            w = self._romance()
        elif x < 0.78:
            w = self._english()
        elif x < 0.86:
            w = self._acronym()
        elif x < 0.90:
            w = self._vietnamese()
        elif x < 0.95:
            w = r.choice(_FIRST)
        else:
            a = self._finnish() if r.random() < 0.5 else self._romance()
            w = f"{a}-{a}" if r.random() < 0.3 else f"{a}.{r.choice('ABCDEFGHKLMNPRST')}"
        return w

    # ---- whole names ----------------------------------------------------------------------
    def _compose(self, kind: str) -> str:
        r = self.rng
        words = TYPE_WORDS.get(kind) or LANDMARK_WORDS
        core = self.core()
        x = r.random()
        if x < 0.22:
            name = core
        elif x < 0.42:
            name = f"{core} {r.choice(words)}"
        elif x < 0.55:
            name = f"{r.choice(words)} {core}"
        elif x < 0.63:
            name = f"{core} {self.core()}"
        elif x < 0.70:
            name = f"{core} {r.choice(_EN_LOWER)}"
        elif x < 0.75:
            name = f"{r.choice(_FIRST)}'s {r.choice(words) if r.random() < 0.7 else r.choice(_EN_LOWER)}"
        elif x < 0.80:
            name = f"{core} {r.choice(['&', '+', 'and', '/'])} {self.core()}"
        elif x < 0.84:
            name = f"The {core}" if r.random() < 0.5 else f"The {r.choice(_EN_WORDS)} {r.choice(words)}"
        elif x < 0.88:
            n = r.choice([str(r.randint(1, 99)), str(r.randint(100, 2024))])
            name = f"{core} {n}" if r.random() < 0.5 else f"{n}-{core}"
        elif x < 0.92:
            name = f"{core} {r.choice(words)} ({self.core()})"
        elif x < 0.95:
            name = f"{core}!" if r.random() < 0.5 else f"{r.choice(words)} {core}!"
        elif x < 0.98:
            name = f"{r.choice(_EN_WORDS)} {core} {r.choice(words)} {r.choice(_EN_LOWER)}"
        else:
            name = f"{core.lower()} {r.choice(_EN_LOWER)}"
        return name

    def _fresh(self, make) -> str:
        for _ in range(1000):
            name = make()
            key = name.casefold()
            if key in self.used or key in self.avoid:
                continue
            words = {w.strip("!.'()").casefold() for w in name.replace("-", " ").split()}
            if words & self.avoid_words:
                continue
            self.used.add(key)
            return name
        raise RuntimeError("name generator exhausted")          # pragma: no cover

    def place(self, kind: str = "") -> str:
        """A fresh name for a place of V-IRL type `kind` (or an OSM `key:value` landmark type)."""
        return self._fresh(lambda: self._compose(kind))

    def street(self) -> str:
        """A fresh street name (`Koivukatu`, `Amber Road`, `Via Brella` …)."""
        r = self.rng

        def make() -> str:
            x = r.random()
            if x < 0.45:
                return self._finnish() + r.choice(STREET_WORDS)
            if x < 0.75:
                return (self._english() if r.random() < 0.5 else self.core()) + r.choice(STREET_SUFFIX)
            return r.choice(STREET_PREFIX) + self._romance()
        return self._fresh(make)


@lru_cache(maxsize=1)
def helsinki_names() -> frozenset[str]:
    """Every place and street name of the bundled Helsinki map (the evaluation map): the names the
    generator must never produce."""
    f = _bundled_features("helsinki.map.json.gz")
    return frozenset({p.name for p in f.places} | {s.name for s in f.streets if s.name})
