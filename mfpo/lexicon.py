"""Offline English lexicon for the keyword stage: lemmas, head nouns, synonyms, stop lists.

Everything here works without downloads: lemmas come from ``lemminflect`` (which ships
its tables), synonyms from a small hand-written table of common visual objects (COCO,
Visual Genome and LVIS head classes). WordNet proper is not available offline (the
installed ``wordnet-lookup`` package only answers "is this a WordNet term"), so the
table is deliberately small and precise rather than broad.

The stop lists (:data:`NON_VISUAL_NOUNS`, :data:`STOP_MODIFIERS`) define what the
keyword stage refuses to select: nouns that name no region of an image ("atmosphere",
"scene", "image") and determiner-like adjectives ("several", "other", "visible").
"""

from __future__ import annotations

import re
from functools import lru_cache

from lemminflect import getLemma

_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")

# lemminflect returns several lemmas for some nouns, or strips the -s of plural-only nouns
# ("shorts" -> "short"); these forms are kept as written or resolved to the object sense.
_NOUN_LEMMA_OVERRIDES: dict[str, str] = {
    "leaves": "leaf",
    "glasses": "glasses",
    "eyeglasses": "glasses",
    "sunglasses": "sunglasses",
    "shorts": "shorts",
    "pants": "pants",
    "trousers": "trousers",
    "jeans": "jeans",
    "scissors": "scissors",
    "goggles": "goggles",
    "binoculars": "binoculars",
    "headphones": "headphones",
    "earphones": "earphones",
    "clothes": "clothes",
    "stairs": "stairs",
    "axes": "axe",
    "bases": "base",
    "data": "data",
    "people": "people",
    "skis": "ski",
}

NON_VISUAL_NOUNS: frozenset[str] = frozenset(
    """
    image picture photo photograph pic snapshot shot scene scenery view perspective angle composition
    focus foreground background midground backdrop setting environment surroundings gradient trick stack pile
    atmosphere ambiance
    ambience mood vibe feel feeling sense sensation emotion impression moment time day daytime nighttime
    night evening morning afternoon season weather occasion event activity action interaction experience
    life lifestyle energy spirit essence beauty charm style design theme concept idea element aspect
    feature detail details characteristic quality nature appearance presence absence look glance
    attention interest way manner kind type sort variety number amount lot lots plenty bunch couple pair
    group set series range array collection mix mixture combination part portion piece section segment
    area region space place spot location position side top bottom front back middle center centre edge
    corner left right distance direction level height size shape color colour hue shade tone texture
    pattern contrast lighting sunlight brightness darkness shadow reflection glow hint touch evidence
    overall whole entire rest thing things something anything everything nothing someone anyone everyone
    one ones other others item items object objects stuff question answer description caption text
    response user assistant viewer observer visibility clarity resolution depth blur sharpness purpose
    reason result effect situation condition state status sense care use fun joy happiness relaxation
    leisure camaraderie togetherness unity harmony tranquility serenity peace excitement adventure
    celebration gathering community culture history tradition heritage
    """.split()
)
"""Nouns that name no segmentable object: image/meta words, abstractions, quantities,
positions, and light effects. A noun phrase whose head is one of these is not a keyword;
inside a longer noun run they act as a boundary ("background trees" -> "trees")."""

STOP_MODIFIERS: frozenset[str] = frozenset(
    """
    other several many various different same such few overall next much more most own certain numerous
    multiple main possible visible entire whole total additional specific particular likely able unable
    top bottom left right front back middle central single individual distinct notable noticeable
    prominent apparent clear visible evident present
    """.split()
)
"""Adjectives that quantify or locate rather than describe; they break a noun phrase
("several people" -> "people")."""

PARTITIVE_NOUNS: frozenset[str] = frozenset(
    """
    herd flock crowd group bunch pair couple slice piece row stack pile set collection assortment variety lot
    number array selection handful cluster line series bundle batch swarm pack team fleet display arrangement
    mix sea roll plate bowl
    """.split()
)
"""Nouns that, followed by "of", name a quantity or a part of what the "of" phrase names
("a herd of zebras", "a slice of pizza", "rolls of toilet paper"): the candidate is the
complement, not the partitive. ("plate"/"bowl" of food: the food is the object named.)"""

# Groups of names for the same object class. Each name is a lemma (phrase_lemma form).
_SYNONYM_GROUPS: tuple[frozenset[str], ...] = tuple(
    frozenset(g.split("|"))
    for g in (
        "person|people|human|persons|individual|pedestrian",
        "man|gentleman|guy|male",
        "woman|lady|female",
        "child|kid|youngster",
        "baby|infant|toddler",
        "car|automobile|auto|sedan|motorcar",
        "bike|bicycle|cycle",
        "motorcycle|motorbike|moped|scooter",
        "airplane|plane|aeroplane|aircraft|airliner|jet",
        "boat|ship|vessel",
        "truck|lorry",
        "tv|television|tv set|television set",
        "laptop|notebook computer|laptop computer",
        "cell phone|cellphone|mobile phone|phone|smartphone|telephone",
        "remote|remote control|controller",
        "cup|mug|teacup|coffee cup",
        "couch|sofa|settee",
        "refrigerator|fridge",
        "microwave|microwave oven",
        "potted plant|plant|houseplant|pot plant",
        "handbag|purse",
        "backpack|rucksack|knapsack",
        "doughnut|donut",
        "hot dog|hotdog",
        "teddy bear|teddy|stuffed animal|stuffed toy|plush toy",
        "umbrella|parasol",
        "hydrant|fire hydrant",
        "dog|puppy|pup|canine|doggy",
        "cat|kitten|kitty|feline",
        "horse|pony|stallion|mare|foal",
        "cow|cattle|bull|calf|ox",
        "sheep|lamb|ram",
        "bird|birdie",
        "trash can|garbage can|bin|rubbish bin|waste bin|dustbin|trash bin",
        "pants|trousers|slacks",
        "sneaker|trainer|running shoe",
        "sweater|jumper|pullover",
        "t-shirt|tee|tee shirt",
        "glasses|spectacles|eyeglasses",
        "sunglasses|shades",
        "road|street|roadway",
        "sidewalk|pavement|footpath",
        "ocean|sea",
        "rock|stone|boulder",
        "hill|hillside",
        "house|home|cottage",
        "lamp|light fixture",
        "monitor|computer screen|screen|display",
        "keyboard|computer keyboard",
        "mouse|computer mouse",
        "sink|basin|washbasin",
        "toilet|lavatory",
        "ball|football|soccer ball|sports ball",
        "stop sign|stop signal",
        "traffic light|traffic signal|stoplight",
        "street sign|road sign",
        "table|dining table",
        "surfboard|surf board",
        "snowboard|snow board",
        "skateboard|skate board",
        "tennis racket|racket|racquet|tennis racquet",
        "baseball bat|bat",
        "baseball glove|glove|mitt",
        "wine glass|glass",
        "bottle|flask",
        "picture frame|photo frame",
        "painting|canvas",
        "clock|wall clock",
        "vase|flower vase",
        "bowl|dish",
        "plate|platter",
        "fork|dinner fork",
        "knife|blade",
        "spoon|teaspoon|tablespoon",
        "book|novel|textbook",
        "sandwich|sub",
        "burger|hamburger|cheeseburger",
        "orange|tangerine|mandarin",
        "flower|blossom|bloom",
        "grass|lawn|turf",
        "wave|surf",
        "bus|coach",
        "train|locomotive",
    )
)

# Broader classes: a label for the broad class names a keyword of the narrow one (and back).
_HYPERNYMS: dict[str, frozenset[str]] = {
    k: frozenset(v.split("|"))
    for k, v in {
        "person": (
            "man|woman|child|baby|boy|girl|player|skier|surfer|skateboarder|snowboarder|rider|cyclist"
            "|biker|chef|cook|worker|police officer|officer|soldier|student|teacher|doctor|nurse"
            "|farmer|vendor|customer|athlete|runner|batter|pitcher|catcher|umpire|tourist|spectator"
            "|crowd|adult|teenager|passenger|driver|pedestrian|couple|family|friend|bride|groom"
        ),
        "vehicle": "car|truck|bus|van|motorcycle|bike|train|tractor|taxi|jeep|suv|airplane|boat",
        "animal": "dog|cat|horse|cow|sheep|bird|elephant|bear|zebra|giraffe|deer|goat|pig|duck",
        "bird": "pigeon|seagull|gull|duck|goose|swan|parrot|owl|eagle|sparrow|crow|chicken",
        "furniture": "chair|couch|table|bed|desk|bench|cabinet|shelf|dresser|stool",
        "shirt": "t-shirt|blouse|polo|jersey",
        "shoe": "sneaker|boot|sandal|heel",
        "food": "pizza|sandwich|cake|doughnut|hot dog|banana|apple|orange|broccoli|carrot|salad",
        "fruit": "banana|apple|orange|grape|strawberry|pear|lemon|peach|watermelon",
        "building": "house|tower|church|skyscraper|barn|shop|store|restaurant|station",
    }.items()
}


COCO_CATEGORIES: tuple[str, ...] = tuple(
    name.replace("_", " ")
    for name in """
    person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign parking_meter bench
    bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee ski
    snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle wine_glass cup fork
    knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza doughnut cake chair couch potted_plant
    bed table toilet tv laptop mouse remote keyboard cell_phone microwave oven toaster sink refrigerator book clock
    vase scissors teddy_bear hair_drier toothbrush
    """.split()
)
"""The 80 COCO object categories, as lemmas of our synonym table ("doughnut", "ski", "table").
Each is an object class of its own: two of them never name the same region."""


@lru_cache(maxsize=65536)
def lemma(word: str) -> str:
    """Lowercase noun lemma of one word ("Cups" -> "cup", "men" -> "man", "leaves" -> "leaf").

    Uses lemminflect's noun lemmatizer with a few overrides for plural-only nouns and
    ambiguous forms. Non-words come back lowercased and unchanged.
    """
    w = word.strip().lower()
    if not w:
        return w
    if w in _NOUN_LEMMA_OVERRIDES:
        return _NOUN_LEMMA_OVERRIDES[w]
    # Hyphenated words inflect on their last part: "t-shirts" -> "t-shirt".
    found = getLemma(w, upos="NOUN")
    return found[0].lower() if found else w


def words(phrase: str) -> list[str]:
    """Lowercase word tokens of a phrase; punctuation and digits are dropped."""
    return _WORD.findall(phrase.lower().replace("’", "'"))


def phrase_lemma(phrase: str) -> str:
    """Lemmatize each word and join with single spaces: "Two Red Cups" -> "two red cup"."""
    return " ".join(lemma(w) for w in words(phrase))


# A label like "cup of coffee" or "man on a horse" is headed by the noun before the first
# preposition; determiners and numbers in front are dropped.
_PREPOSITIONS = frozenset(
    """
    of on in with at near by under over behind beside next to from for into onto above below between
    among against along across around inside outside through
    """.split()
)
_LEADING_FUNCTION_WORDS = frozenset(
    """
    a an the this that these those some any two three four five six seven eight nine ten one many
    several few his her their its our my your
    """.split()
)


def core_phrase(phrase: str) -> str:
    """Lemmatized noun phrase without leading function words or trailing prepositional part.

    "Two red cups" -> "red cup"; "a cup of coffee" -> "cup"; "the man on the horse" -> "man".
    """
    toks = words(phrase)
    for i, t in enumerate(toks):
        if t in _PREPOSITIONS and i > 0:
            toks = toks[:i]
            break
    while toks and toks[0] in _LEADING_FUNCTION_WORDS:
        toks = toks[1:]
    return " ".join(lemma(t) for t in toks)


def head_lemma(phrase: str) -> str:
    """Lemma of the head noun: the last word of :func:`core_phrase` ("two red cups" -> "cup")."""
    core = core_phrase(phrase)
    return core.rsplit(" ", 1)[-1] if core else ""


def synonyms(word: str) -> set[str]:
    """Names of the same object class as ``word`` (a word or phrase), itself included.

    Looks up the lemmatized phrase in the shipped synonym table: "automobile" ->
    {"car", "automobile", "auto", ...}. A name outside the table gives ``{lemma}``.
    """
    key = phrase_lemma(word)
    out = {key}
    for group in _SYNONYM_GROUPS:
        if key in group:
            out |= group
    return out


def hypernyms(word: str) -> set[str]:
    """Broader classes of ``word`` in the shipped table, transitively ("pigeon" -> {"bird", "animal"})."""
    found: set[str] = set()
    frontier = synonyms(word)
    while frontier:
        broader = {broad for broad, narrow in _HYPERNYMS.items() if frontier & narrow} - found
        found |= broader
        frontier = set().union(*(synonyms(b) for b in broader)) if broader else set()
    return found


def same_object_class(a: str, b: str) -> bool:
    """True if ``a`` and ``b`` are synonyms, or one is a listed hypernym of the other."""
    syn_a, syn_b = synonyms(a), synonyms(b)
    if syn_a & syn_b:
        return True
    return bool((hypernyms(a) & syn_b) or (hypernyms(b) & syn_a))


KNOWN_NAMES: frozenset[str] = frozenset(
    set().union(*_SYNONYM_GROUPS)
    | set(_HYPERNYMS)
    | set().union(*_HYPERNYMS.values())
    | set(COCO_CATEGORIES)
)
"""Every object name our tables place in a class (synonym groups, hypernym table, COCO)."""


def object_name(phrase: str) -> str:
    """The name a phrase is judged by: its core phrase's last two words if they are a known
    name ("a brown teddy bear" -> "teddy bear"), else its head lemma ("red cups" -> "cup")."""
    words_ = core_phrase(phrase).split()
    if len(words_) >= 2 and synonyms(" ".join(words_[-2:])) & KNOWN_NAMES:
        return " ".join(words_[-2:])
    return words_[-1] if words_ else ""


def distinct_objects(a: str, b: str) -> bool:
    """True if ``a`` and ``b`` certainly name different objects.

    Both names (by :func:`object_name`) are in our tables and they are neither synonyms
    nor hypernym and hyponym: two COCO categories (car / truck, skateboard / surfboard,
    sofa / chair) or two siblings under one broader class (boy / girl, dog / cat). False
    for "cup" / "mug" (synonyms), "man" / "person" (hyponym), or when either name is
    unknown to the tables (then nothing is certain).
    """
    name_a, name_b = object_name(a), object_name(b)
    if not name_a or not name_b:
        return False
    if not (synonyms(name_a) & KNOWN_NAMES and synonyms(name_b) & KNOWN_NAMES):
        return False
    return not same_object_class(name_a, name_b)
