"""The synthetic catalogue's taxonomy: departments, product types, attribute vocabularies.

Fourteen departments and a few hundred product types named with everyday English words (the
models read them through an English WordPiece vocabulary, so distinct words per type matter).
Each department carries its own made-up brands, materials (or main ingredient / variety, for
grocery and beauty), sizes and "purpose" phrases used in descriptions and queries. Each product
type has a base price in currency units and 1-3 complement types (``smartphone`` -> ``phone
case``, ``charger``), which define the complement grade (label 1) of the search labels.

Everything here is constant data; :func:`check_taxonomy` runs at import and raises
``RuntimeError`` if an edit breaks an invariant (unknown complement, duplicate name, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "COLORS",
    "COMPLEMENTS",
    "DEPARTMENTS",
    "PRICE_BANDS",
    "PRICE_BAND_WORDS",
    "PRODUCT_LINES",
    "PRODUCT_TYPES",
    "Department",
    "ProductType",
    "check_taxonomy",
    "price_band_of",
]

#: Colours shared by every department that has colours (15).
COLORS: tuple[str, ...] = (
    "black",
    "white",
    "grey",
    "navy",
    "blue",
    "red",
    "green",
    "yellow",
    "orange",
    "pink",
    "purple",
    "brown",
    "beige",
    "silver",
    "gold",
)

#: Price bands, cheapest first. An item's band comes from its price relative to its type's base
#: price, see :func:`price_band_of`.
PRICE_BANDS: tuple[str, ...] = ("budget", "mid", "premium", "luxury")

#: Upper bounds of ``price / base_price`` for the first three bands; above the last is luxury.
PRICE_BAND_RATIOS: tuple[float, ...] = (0.75, 1.35, 2.2)

#: Words a shopper types for each band; the first is also used in descriptions.
PRICE_BAND_WORDS: dict[str, tuple[str, ...]] = {
    "budget": ("cheap", "budget", "affordable"),
    "mid": ("mid range", "mid-priced"),
    "premium": ("premium", "high end"),
    "luxury": ("luxury", "designer"),
}

#: Adjective used for each band inside item descriptions.
PRICE_BAND_ADJECTIVES: dict[str, str] = {
    "budget": "budget-friendly",
    "mid": "mid-priced",
    "premium": "premium",
    "luxury": "luxury",
}

#: Product-line words that some titles carry ("Veltro Classic t-shirt"); never graded.
PRODUCT_LINES: tuple[str, ...] = (
    "Classic",
    "Essential",
    "Pro",
    "Lite",
    "Flex",
    "Prime",
    "Studio",
    "Urban",
    "Nova",
    "Everyday",
    "Signature",
    "Active",
)


#: How a department's materials read in text, see :class:`Department`.
MATERIAL_STYLES: tuple[str, ...] = ("noun", "ingredient", "adjective")


def price_band_of(ratio: float) -> str:
    """Band name for ``price / base_price`` (dimensionless): budget < 0.75 <= mid < 1.35 <=
    premium < 2.2 <= luxury."""
    for band, upper in zip(PRICE_BANDS, PRICE_BAND_RATIOS, strict=False):
        if ratio < upper:
            return band
    return PRICE_BANDS[-1]


@dataclass(frozen=True)
class ProductType:
    """One product type: ``base_price`` in currency units (the typical mid-band price)."""

    name: str
    department: str
    base_price: float
    complements: tuple[str, ...]
    has_color: bool
    has_material: bool
    has_size: bool


@dataclass(frozen=True)
class Department:
    """A department and the vocabularies its items draw from.

    ``types`` holds ``(name, base_price, complements)`` triples. ``sizes`` may be empty (no
    size); ``size_prefix`` is put before the size in titles (``"size "`` -> "size M").
    ``color_flip`` lists types whose colour flag is the opposite of ``has_color``;
    ``no_material`` and ``no_size`` list types without that attribute. ``material_style`` says
    how the material reads in text: ``"noun"`` ("made of cotton"), ``"ingredient"`` ("with aloe
    vera") or ``"adjective"`` ("organic honey").
    """

    name: str
    brands: tuple[str, ...]
    materials: tuple[str, ...]
    sizes: tuple[str, ...]
    size_prefix: str
    has_color: bool
    purposes: tuple[str, ...]
    types: tuple[tuple[str, float, tuple[str, ...]], ...]
    color_flip: frozenset[str] = field(default_factory=frozenset)
    no_material: frozenset[str] = field(default_factory=frozenset)
    no_size: frozenset[str] = field(default_factory=frozenset)
    material_style: str = "noun"


# One department per block; the vocabularies read better packed than one word per line.
# fmt: off
DEPARTMENTS: tuple[Department, ...] = (
    Department(
        name="Clothing",
        brands=(
            "Veltro", "Marlowe", "Kestrel", "Norvik", "Solenne",
            "Tavish", "Ardenne", "Brisco", "Lunetta", "Corvane",
        ),
        materials=(
            "cotton", "linen", "wool", "denim", "polyester", "fleece",
            "silk", "cashmere", "leather", "nylon", "bamboo", "corduroy",
        ),
        sizes=("XS", "S", "M", "L", "XL", "XXL"),
        size_prefix="size ",
        has_color=True,
        purposes=("everyday wear", "the office", "weekends", "travel"),
        types=(
            ("t-shirt", 18, ("jeans", "shorts")),
            ("jeans", 55, ("belt", "t-shirt")),
            ("hoodie", 45, ("joggers", "t-shirt")),
            ("joggers", 38, ("hoodie", "sneakers")),
            ("sweater", 50, ("scarf", "jeans")),
            ("dress", 60, ("heels", "handbag")),
            ("skirt", 40, ("blouse", "tights")),
            ("blouse", 38, ("skirt", "chinos")),
            ("tights", 12, ("dress", "skirt")),
            ("shorts", 28, ("t-shirt", "sandals")),
            ("rain jacket", 80, ("hiking boots", "rain boots")),
            ("winter coat", 140, ("scarf", "gloves", "beanie")),
            ("polo shirt", 32, ("chinos", "loafers")),
            ("chinos", 48, ("polo shirt", "belt", "loafers")),
            ("leggings", 30, ("sports bra", "yoga mat")),
            ("sports bra", 28, ("leggings", "running shoes")),
            ("pajamas", 35, ("slippers",)),
            ("socks", 10, ("sneakers", "running shoes")),
            ("belt", 25, ("jeans", "chinos")),
            ("scarf", 22, ("winter coat", "gloves", "beanie")),
            ("gloves", 20, ("scarf", "beanie")),
            ("beanie", 16, ("scarf", "gloves")),
            ("baseball cap", 18, ("t-shirt", "sunglasses")),
            ("handbag", 75, ("wallet", "sunglasses")),
            ("wallet", 30, ("handbag", "belt")),
            ("sunglasses", 45, ("baseball cap", "sunscreen")),
        ),
        no_size=frozenset({"belt", "scarf", "handbag", "wallet", "sunglasses", "beanie"}),
    ),
    Department(
        name="Footwear",
        brands=(
            "Stridon", "Pellora", "Trekka", "Runova", "Calder",
            "Bosquet", "Ambrel", "Feltham", "Quillo",
        ),
        materials=(
            "leather", "suede", "canvas", "mesh", "rubber", "synthetic",
            "knit", "nubuck", "cork", "patent leather",
        ),
        sizes=("36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46"),
        size_prefix="size ",
        has_color=True,
        purposes=("everyday wear", "long walks", "the office", "weekends"),
        types=(
            ("running shoes", 90, ("socks", "insoles", "water bottle")),
            ("sneakers", 70, ("socks", "shoe cleaner")),
            ("hiking boots", 130, ("socks", "hiking backpack", "rain jacket")),
            ("ankle boots", 110, ("socks", "shoe polish")),
            ("rain boots", 45, ("rain jacket", "socks")),
            ("sandals", 35, ("shorts", "sunglasses")),
            ("flip flops", 15, ("beach towel", "sunglasses")),
            ("slippers", 25, ("pajamas",)),
            ("loafers", 95, ("chinos", "shoe polish")),
            ("heels", 85, ("dress", "handbag")),
            ("ballet flats", 50, ("dress", "skirt")),
            ("oxford shoes", 120, ("shoe polish", "belt")),
            ("football boots", 80, ("football", "shin guards")),
            ("insoles", 18, ("running shoes", "hiking boots")),
            ("shoe polish", 8, ("oxford shoes", "shoe brush")),
            ("shoe brush", 9, ("shoe polish", "shoe cleaner")),
            ("shoe cleaner", 12, ("sneakers", "shoe brush")),
        ),
        no_material=frozenset({"shoe polish", "shoe cleaner"}),
        no_size=frozenset({"shoe polish", "shoe brush", "shoe cleaner"}),
        color_flip=frozenset({"shoe cleaner"}),
    ),
    Department(
        name="Electronics",
        brands=(
            "Voltix", "Nuvora", "Zentric", "Auralis", "Kyro", "Lumetra",
            "Pixelon", "Quorra", "Sonaro", "Brightel", "Cendra",
        ),
        materials=(
            "aluminium", "plastic", "glass", "silicone", "leather",
            "stainless steel", "carbon fiber", "fabric", "rubber", "titanium",
        ),
        sizes=(),
        size_prefix="",
        has_color=True,
        purposes=("work", "travel", "gaming", "home use"),
        types=(
            ("smartphone", 450, ("phone case", "screen protector", "charger")),
            ("phone case", 18, ("smartphone", "screen protector")),
            ("screen protector", 12, ("smartphone", "phone case")),
            ("charger", 22, ("smartphone", "usb cable", "power bank")),
            ("usb cable", 10, ("charger", "power bank")),
            ("power bank", 35, ("usb cable", "smartphone")),
            ("wireless earbuds", 90, ("smartphone", "charger")),
            ("headphones", 120, ("laptop", "smartphone")),
            ("laptop", 900, ("laptop bag", "wireless mouse", "laptop stand")),
            ("laptop bag", 45, ("laptop",)),
            ("laptop stand", 35, ("laptop", "keyboard")),
            ("keyboard", 60, ("wireless mouse", "monitor", "mouse pad")),
            ("wireless mouse", 30, ("mouse pad", "keyboard")),
            ("mouse pad", 12, ("wireless mouse",)),
            ("monitor", 250, ("hdmi cable", "keyboard")),
            ("hdmi cable", 12, ("monitor", "television")),
            ("television", 600, ("hdmi cable", "soundbar", "tv wall mount")),
            ("soundbar", 200, ("television", "hdmi cable")),
            ("tv wall mount", 40, ("television",)),
            ("tablet", 350, ("tablet case", "stylus pen", "charger")),
            ("tablet case", 25, ("tablet",)),
            ("stylus pen", 40, ("tablet",)),
            ("smartwatch", 220, ("watch strap", "charger")),
            ("watch strap", 20, ("smartwatch",)),
            ("bluetooth speaker", 70, ("power bank", "usb cable")),
            ("digital camera", 550, ("memory card", "camera bag", "tripod")),
            ("memory card", 20, ("digital camera", "dash cam")),
            ("camera bag", 45, ("digital camera", "tripod")),
            ("tripod", 40, ("digital camera", "smartphone")),
            ("batteries", 9, ("remote control car", "wireless mouse")),
        ),
        no_material=frozenset({"batteries", "memory card"}),
        color_flip=frozenset({"batteries", "memory card", "hdmi cable"}),
    ),
    Department(
        name="Home & Kitchen",
        brands=(
            "Hearthly", "Casamia", "Dunmore", "Kitchara", "Pindle",
            "Oakhurst", "Sorrel", "Bellwick", "Nordhaven", "Amberlee",
        ),
        materials=(
            "stainless steel", "cast iron", "ceramic", "glass", "bamboo", "wood",
            "cotton", "linen", "plastic", "silicone", "porcelain", "copper",
        ),
        sizes=("small", "medium", "large"),
        size_prefix="",
        has_color=True,
        purposes=("everyday use", "the home", "family meals", "small spaces"),
        types=(
            ("frying pan", 35, ("spatula", "olive oil")),
            ("saucepan", 40, ("wooden spoon", "pasta")),
            ("stock pot", 50, ("ladle",)),
            ("spatula", 8, ("frying pan",)),
            ("wooden spoon", 6, ("saucepan",)),
            ("ladle", 7, ("stock pot",)),
            ("chef knife", 60, ("cutting board", "knife sharpener")),
            ("cutting board", 22, ("chef knife",)),
            ("knife sharpener", 18, ("chef knife",)),
            ("blender", 70, ("measuring cups",)),
            ("measuring cups", 12, ("mixing bowl",)),
            ("mixing bowl", 20, ("whisk", "measuring cups")),
            ("whisk", 7, ("mixing bowl",)),
            ("toaster", 40, ("kettle", "strawberry jam")),
            ("kettle", 35, ("black tea", "coffee mug")),
            ("coffee maker", 90, ("coffee beans", "coffee mug", "coffee filters")),
            ("coffee filters", 5, ("coffee maker", "ground coffee")),
            ("coffee mug", 12, ("coffee beans", "green tea")),
            ("dinner plate", 15, ("cutlery set",)),
            ("cutlery set", 40, ("dinner plate",)),
            ("wine glass", 14, ("dinner plate",)),
            ("bath towel", 20, ("bath mat", "shower curtain")),
            ("bath mat", 18, ("bath towel",)),
            ("shower curtain", 22, ("bath mat",)),
            ("beach towel", 22, ("flip flops", "sunscreen")),
            ("bed sheet", 40, ("pillow", "duvet")),
            ("pillow", 30, ("pillowcase", "bed sheet")),
            ("pillowcase", 14, ("pillow",)),
            ("duvet", 80, ("duvet cover",)),
            ("duvet cover", 50, ("duvet", "pillowcase")),
            ("table lamp", 45, ("light bulb",)),
            ("light bulb", 6, ("table lamp", "desk lamp")),
            ("storage box", 20, ("label maker",)),
            ("vacuum cleaner", 180, ("vacuum bags",)),
            ("vacuum bags", 12, ("vacuum cleaner",)),
            ("candle", 15, ("candle holder",)),
            ("candle holder", 12, ("candle",)),
        ),
        no_material=frozenset({"candle", "light bulb", "vacuum bags", "coffee filters"}),
        color_flip=frozenset({"light bulb", "vacuum bags", "coffee filters"}),
        no_size=frozenset({"light bulb", "coffee filters", "whisk", "ladle", "spatula"}),
    ),
    Department(
        name="Sports & Outdoors",
        brands=(
            "Peakform", "Trailo", "Vantor", "Kinetra", "Summitra",
            "Alpenna", "Motiva", "Fitzel", "Cordell", "Boldara",
        ),
        materials=(
            "neoprene", "nylon", "polyester", "rubber", "aluminium", "steel",
            "foam", "cotton", "carbon fiber", "mesh", "down", "cork",
        ),
        sizes=("small", "medium", "large"),
        size_prefix="",
        has_color=True,
        purposes=("the gym", "home workouts", "camping trips", "beginners"),
        types=(
            ("yoga mat", 30, ("yoga block", "leggings", "water bottle")),
            ("yoga block", 12, ("yoga mat",)),
            ("dumbbell", 40, ("weight bench", "kettlebell")),
            ("kettlebell", 45, ("dumbbell",)),
            ("weight bench", 150, ("dumbbell",)),
            ("resistance bands", 18, ("yoga mat",)),
            ("jump rope", 10, ("water bottle",)),
            ("water bottle", 15, ("gym bag",)),
            ("gym bag", 35, ("water bottle", "running shoes")),
            ("protein shaker", 10, ("water bottle", "gym bag")),
            ("tent", 160, ("sleeping bag", "camping stove", "headlamp")),
            ("sleeping bag", 80, ("tent", "sleeping pad")),
            ("sleeping pad", 50, ("sleeping bag",)),
            ("camping stove", 60, ("tent", "water bottle")),
            ("headlamp", 25, ("batteries", "tent")),
            ("hiking backpack", 90, ("water bottle", "hiking boots")),
            ("bicycle", 500, ("bike helmet", "bike lock", "bike light")),
            ("bike helmet", 55, ("bicycle", "bike light")),
            ("bike lock", 30, ("bicycle",)),
            ("bike light", 25, ("bicycle", "batteries")),
            ("tennis racket", 110, ("tennis balls",)),
            ("tennis balls", 8, ("tennis racket",)),
            ("football", 25, ("football boots", "shin guards")),
            ("shin guards", 15, ("football boots", "football")),
            ("basketball", 30, ("water bottle",)),
            ("swim goggles", 15, ("swim cap",)),
            ("swim cap", 10, ("swim goggles",)),
            ("fishing rod", 70, ("fishing reel", "tackle box")),
            ("fishing reel", 60, ("fishing rod",)),
            ("tackle box", 25, ("fishing rod",)),
        ),
        no_size=frozenset({"tennis balls", "football", "basketball", "jump rope", "headlamp"}),
    ),
    Department(
        name="Beauty & Personal Care",
        brands=(
            "Auralee", "Bloomery", "Seraphine", "Dermaloe", "Glossa",
            "Purelle", "Calendra", "Mireval", "Nectara", "Velisse",
        ),
        materials=(
            "aloe vera", "argan oil", "shea butter", "coconut oil", "vitamin c",
            "charcoal", "tea tree", "rose", "lavender", "hyaluronic acid",
            "keratin", "collagen",
        ),
        sizes=("30 ml", "50 ml", "100 ml", "250 ml", "500 ml"),
        size_prefix="",
        has_color=False,
        purposes=("daily use", "sensitive skin", "travel", "gifting"),
        types=(
            ("shampoo", 9, ("conditioner", "hair mask")),
            ("conditioner", 9, ("shampoo",)),
            ("hair mask", 14, ("shampoo", "conditioner")),
            ("hair dryer", 60, ("hair brush",)),
            ("hair brush", 12, ("hair dryer",)),
            ("hair straightener", 55, ("hair brush",)),
            ("face cream", 25, ("face cleanser", "serum")),
            ("face cleanser", 14, ("face cream",)),
            ("serum", 30, ("face cream",)),
            ("sunscreen", 15, ("beach towel", "sunglasses")),
            ("body lotion", 12, ("shower gel",)),
            ("shower gel", 7, ("body lotion", "bath towel")),
            ("lipstick", 18, ("mascara", "makeup remover")),
            ("mascara", 16, ("eyeliner", "makeup remover")),
            ("eyeliner", 12, ("mascara",)),
            ("foundation", 28, ("makeup brush", "makeup remover")),
            ("makeup brush", 15, ("foundation",)),
            ("makeup remover", 10, ("mascara", "face cleanser")),
            ("perfume", 70, ("body lotion",)),
            ("nail polish", 9, ("nail polish remover",)),
            ("nail polish remover", 6, ("nail polish",)),
            ("electric razor", 80, ("aftershave",)),
            ("shaving cream", 7, ("razor blades", "aftershave")),
            ("razor blades", 15, ("shaving cream",)),
            ("aftershave", 25, ("shaving cream",)),
            ("electric toothbrush", 70, ("toothpaste", "toothbrush heads")),
            ("toothbrush heads", 20, ("electric toothbrush",)),
            ("toothpaste", 5, ("electric toothbrush", "dental floss")),
            ("dental floss", 4, ("toothpaste",)),
        ),
        color_flip=frozenset(
            {"lipstick", "nail polish", "hair dryer", "hair brush", "hair straightener",
             "electric razor", "electric toothbrush", "makeup brush", "eyeliner"}
        ),
        no_material=frozenset(
            {"hair dryer", "hair brush", "hair straightener", "electric razor",
             "electric toothbrush", "toothbrush heads", "razor blades", "makeup brush",
             "dental floss", "nail polish remover"}
        ),
        no_size=frozenset(
            {"hair dryer", "hair brush", "hair straightener", "electric razor",
             "electric toothbrush", "toothbrush heads", "razor blades", "makeup brush",
             "lipstick", "mascara", "eyeliner", "dental floss"}
        ),
        material_style="ingredient",
    ),
    Department(
        name="Toys & Games",
        brands=(
            "Jumbly", "Wobblo", "Brixo", "Kidora", "Tinkerly",
            "Mimzi", "Popplet", "Giggaboo", "Snugglo", "Rumpus",
        ),
        materials=(
            "wood", "plastic", "plush", "felt", "cardboard", "foam",
            "metal", "rubber", "fabric", "silicone",
        ),
        sizes=("ages 3+", "ages 6+", "ages 8+", "ages 12+"),
        size_prefix="for ",
        has_color=True,
        purposes=("toddlers", "family game night", "birthdays", "rainy days"),
        types=(
            ("building blocks", 35, ("play mat",)),
            ("play mat", 30, ("building blocks", "plush toy")),
            ("jigsaw puzzle", 15, ("puzzle mat",)),
            ("puzzle mat", 18, ("jigsaw puzzle",)),
            ("board game", 30, ("card game",)),
            ("card game", 12, ("board game",)),
            ("action figure", 18, ("playset",)),
            ("playset", 45, ("action figure", "doll")),
            ("doll", 25, ("dollhouse", "doll clothes")),
            ("dollhouse", 90, ("doll",)),
            ("doll clothes", 12, ("doll",)),
            ("plush toy", 18, ("play mat",)),
            ("toy car", 8, ("race track",)),
            ("race track", 40, ("toy car",)),
            ("remote control car", 55, ("batteries",)),
            ("drone", 120, ("memory card", "batteries")),
            ("kite", 20, ("frisbee",)),
            ("frisbee", 10, ("kite",)),
            ("play dough", 10, ("craft kit",)),
            ("craft kit", 22, ("play dough", "colored pencils")),
            ("science kit", 35, ("craft kit",)),
            ("water gun", 12, ("frisbee",)),
        ),
        no_material=frozenset({"play dough"}),
    ),
    Department(
        name="Books & Stationery",
        brands=(
            "Inkwell", "Quillmark", "Paperlane", "Scriblo", "Marbleton",
            "Penhaven", "Ledgerly", "Novella", "Foliant",
        ),
        materials=(
            "hardcover", "paperback", "leather", "recycled paper", "kraft paper",
            "linen", "metal", "bamboo", "plastic", "wood",
        ),
        sizes=("A4", "A5", "A6", "pocket"),
        size_prefix="",
        has_color=True,
        purposes=("students", "gifting", "travel", "book lovers"),
        types=(
            ("mystery novel", 14, ("book light", "bookmark")),
            ("fantasy novel", 15, ("book light", "bookmark")),
            ("romance novel", 12, ("bookmark",)),
            ("science fiction novel", 15, ("book light",)),
            ("cookbook", 25, ("mixing bowl", "chef knife")),
            ("picture book", 10, ("plush toy",)),
            ("travel guide", 18, ("notebook", "hiking backpack")),
            ("biography", 18, ("bookmark",)),
            ("notebook", 8, ("ballpoint pen", "fountain pen")),
            ("journal", 14, ("fountain pen",)),
            ("planner", 16, ("ballpoint pen", "highlighters")),
            ("sketchbook", 12, ("colored pencils",)),
            ("fountain pen", 45, ("ink bottle", "journal")),
            ("ink bottle", 10, ("fountain pen",)),
            ("ballpoint pen", 4, ("notebook",)),
            ("highlighters", 6, ("planner", "notebook")),
            ("colored pencils", 12, ("sketchbook", "pencil sharpener")),
            ("pencil sharpener", 4, ("colored pencils",)),
            ("bookmark", 4, ("mystery novel", "fantasy novel")),
            ("book light", 15, ("mystery novel", "fantasy novel")),
        ),
        color_flip=frozenset(
            {"mystery novel", "fantasy novel", "romance novel", "science fiction novel",
             "cookbook", "picture book", "travel guide", "biography", "ink bottle"}
        ),
        no_size=frozenset(
            {"mystery novel", "fantasy novel", "romance novel", "science fiction novel",
             "cookbook", "picture book", "travel guide", "biography", "fountain pen",
             "ink bottle", "ballpoint pen", "highlighters", "colored pencils",
             "pencil sharpener", "bookmark", "book light"}
        ),
        no_material=frozenset({"ink bottle", "highlighters", "colored pencils"}),
    ),
    Department(
        name="Garden & Outdoor",
        brands=(
            "Greenmere", "Thornbury", "Fernwick", "Mossley", "Hedgely",
            "Willowby", "Sproutwell", "Gardeno", "Larkspur",
        ),
        materials=(
            "steel", "aluminium", "plastic", "terracotta", "ceramic", "wood",
            "teak", "rattan", "rubber", "resin", "cedar", "stainless steel",
        ),
        sizes=("small", "medium", "large"),
        size_prefix="",
        has_color=True,
        purposes=("small gardens", "balconies", "the patio", "summer evenings"),
        types=(
            ("garden hose", 35, ("hose nozzle", "hose reel")),
            ("hose nozzle", 10, ("garden hose",)),
            ("hose reel", 45, ("garden hose",)),
            ("lawn mower", 250, ("grass trimmer", "garden gloves")),
            ("grass trimmer", 90, ("lawn mower", "trimmer line")),
            ("trimmer line", 10, ("grass trimmer",)),
            ("pruning shears", 20, ("garden gloves",)),
            ("garden gloves", 10, ("pruning shears", "trowel")),
            ("trowel", 9, ("garden gloves", "potting soil")),
            ("flower pot", 15, ("potting soil", "flower seeds")),
            ("potting soil", 12, ("flower pot", "trowel")),
            ("flower seeds", 4, ("flower pot", "watering can")),
            ("vegetable seeds", 4, ("raised garden bed", "watering can")),
            ("raised garden bed", 80, ("potting soil", "vegetable seeds")),
            ("watering can", 15, ("flower seeds",)),
            ("bird feeder", 25, ("bird seed",)),
            ("bird seed", 10, ("bird feeder", "bird cage")),
            ("patio chair", 70, ("patio table", "outdoor cushion")),
            ("patio table", 150, ("patio chair", "patio umbrella")),
            ("patio umbrella", 80, ("patio table",)),
            ("outdoor cushion", 25, ("patio chair",)),
            ("barbecue grill", 250, ("grill brush", "charcoal", "grill tongs")),
            ("grill brush", 12, ("barbecue grill",)),
            ("charcoal", 15, ("barbecue grill",)),
            ("grill tongs", 12, ("barbecue grill",)),
            ("string lights", 20, ("patio table", "patio umbrella")),
        ),
        no_material=frozenset(
            {"potting soil", "flower seeds", "vegetable seeds", "bird seed", "charcoal",
             "trimmer line"}
        ),
        color_flip=frozenset(
            {"potting soil", "flower seeds", "vegetable seeds", "bird seed", "charcoal"}
        ),
        no_size=frozenset({"flower seeds", "vegetable seeds", "hose nozzle", "grill tongs"}),
    ),
    Department(
        name="Automotive",
        brands=(
            "Motorra", "Axleby", "Drivana", "Gearton", "Torqa",
            "Carvell", "Autelo", "Pistona", "Revvo",
        ),
        materials=(
            "rubber", "leather", "microfiber", "plastic", "steel", "aluminium",
            "synthetic", "polyester", "carpet", "silicone",
        ),
        sizes=(),
        size_prefix="",
        has_color=True,
        purposes=("road trips", "daily commutes", "winter driving", "every car"),
        types=(
            ("car phone mount", 20, ("car charger", "smartphone")),
            ("car charger", 15, ("car phone mount", "usb cable")),
            ("floor mats", 40, ("seat covers",)),
            ("seat covers", 55, ("floor mats", "steering wheel cover")),
            ("steering wheel cover", 15, ("seat covers",)),
            ("car wax", 15, ("microfiber cloths", "car wash soap")),
            ("car wash soap", 10, ("microfiber cloths", "car wax")),
            ("microfiber cloths", 10, ("car wax", "car wash soap")),
            ("tire inflator", 45, ("tire pressure gauge",)),
            ("tire pressure gauge", 12, ("tire inflator",)),
            ("jump starter", 80, ("tire inflator",)),
            ("dash cam", 90, ("memory card",)),
            ("wiper blades", 20, ("windshield washer fluid",)),
            ("windshield washer fluid", 6, ("wiper blades",)),
            ("motor oil", 30, ("oil filter",)),
            ("oil filter", 10, ("motor oil",)),
            ("car air freshener", 5, ("car vacuum",)),
            ("car vacuum", 45, ("car air freshener", "floor mats")),
            ("roof box", 300, ("roof bars",)),
            ("roof bars", 150, ("roof box", "bike rack")),
            ("bike rack", 200, ("roof bars", "bicycle")),
        ),
        no_material=frozenset(
            {"car wax", "car wash soap", "windshield washer fluid", "motor oil",
             "car air freshener"}
        ),
        color_flip=frozenset(
            {"car wax", "car wash soap", "windshield washer fluid", "motor oil", "oil filter"}
        ),
    ),
    Department(
        name="Office",
        brands=(
            "Deskora", "Officio", "Clerkwell", "Stapleton", "Workly",
            "Ledgeline", "Corbin", "Papyra", "Tallis",
        ),
        materials=(
            "steel", "wood", "plastic", "mesh", "leather", "bamboo",
            "paper", "aluminium", "fabric", "glass",
        ),
        sizes=(),
        size_prefix="",
        has_color=True,
        purposes=("the home office", "small offices", "students", "daily use"),
        types=(
            ("office chair", 180, ("chair mat", "standing desk")),
            ("chair mat", 40, ("office chair",)),
            ("standing desk", 350, ("office chair", "desk lamp", "monitor")),
            ("desk lamp", 35, ("light bulb", "standing desk")),
            ("desk organizer", 18, ("sticky notes",)),
            ("printer", 150, ("printer paper", "ink cartridge")),
            ("printer paper", 8, ("printer",)),
            ("ink cartridge", 30, ("printer",)),
            ("stapler", 10, ("staples",)),
            ("staples", 3, ("stapler",)),
            ("file folders", 10, ("filing cabinet", "label maker")),
            ("filing cabinet", 120, ("file folders",)),
            ("whiteboard", 50, ("whiteboard markers", "whiteboard eraser")),
            ("whiteboard markers", 8, ("whiteboard",)),
            ("whiteboard eraser", 5, ("whiteboard markers",)),
            ("paper shredder", 80, ("printer paper",)),
            ("label maker", 35, ("label tape",)),
            ("label tape", 12, ("label maker",)),
            ("sticky notes", 5, ("desk organizer", "highlighters")),
            ("calculator", 15, ("desk organizer",)),
            ("laminator", 45, ("laminating pouches",)),
            ("laminating pouches", 12, ("laminator",)),
        ),
        no_material=frozenset(
            {"printer paper", "ink cartridge", "staples", "whiteboard markers", "label tape",
             "laminating pouches", "sticky notes"}
        ),
        color_flip=frozenset({"printer paper", "staples", "laminating pouches"}),
    ),
    Department(
        name="Pet Supplies",
        brands=(
            "Pawsley", "Whiskerly", "Barkwell", "Kibblo", "Snoutly",
            "Fetchly", "Purrsa", "Tabbyton", "Houndry",
        ),
        materials=(
            "nylon", "leather", "plush", "plastic", "stainless steel", "rubber",
            "ceramic", "cotton", "rope", "bamboo", "sisal",
        ),
        sizes=("small", "medium", "large"),
        size_prefix="",
        has_color=True,
        purposes=("everyday use", "happy pets", "travel", "puppies and kittens"),
        types=(
            ("dry dog food", 45, ("pet bowl", "dog treats")),
            ("wet cat food", 25, ("pet bowl",)),
            ("dry cat food", 35, ("pet bowl", "cat treats")),
            ("dog treats", 10, ("dry dog food", "chew toy")),
            ("cat treats", 6, ("dry cat food", "cat toy")),
            ("dog bed", 50, ("chew toy",)),
            ("cat bed", 35, ("cat tree",)),
            ("cat litter", 18, ("litter box", "litter scoop")),
            ("litter box", 30, ("cat litter", "litter scoop")),
            ("litter scoop", 6, ("litter box",)),
            ("dog leash", 18, ("dog collar", "poop bags")),
            ("dog collar", 15, ("dog leash",)),
            ("poop bags", 8, ("dog leash",)),
            ("dog harness", 28, ("dog leash",)),
            ("cat tree", 80, ("cat bed", "cat toy")),
            ("cat toy", 6, ("cat treats",)),
            ("chew toy", 8, ("dog treats",)),
            ("pet bowl", 12, ("dry dog food", "dry cat food")),
            ("pet shampoo", 12, ("pet brush",)),
            ("pet brush", 12, ("pet shampoo",)),
            ("pet carrier", 45, ("dog bed",)),
            ("aquarium", 120, ("aquarium filter", "fish food")),
            ("aquarium filter", 35, ("aquarium",)),
            ("fish food", 6, ("aquarium",)),
            ("bird cage", 70, ("bird seed",)),
        ),
        no_material=frozenset(
            {"dry dog food", "wet cat food", "dry cat food", "dog treats", "cat treats",
             "cat litter", "pet shampoo", "fish food", "poop bags"}
        ),
        color_flip=frozenset(
            {"dry dog food", "wet cat food", "dry cat food", "dog treats", "cat treats",
             "cat litter", "pet shampoo", "fish food"}
        ),
        no_size=frozenset(
            {"cat toy", "litter scoop", "pet shampoo", "pet brush", "fish food", "dry dog food",
             "wet cat food", "dry cat food", "dog treats", "cat treats", "cat litter"}
        ),
    ),
    Department(
        name="Grocery",
        brands=(
            "Harvestly", "Goldcrest", "Meadowly", "Tuscana", "Orchardine",
            "Pantrie", "Brewmont", "Millbrook", "Savora", "Honeydale",
        ),
        materials=(
            "organic", "fair trade", "gluten free", "vegan", "low sugar",
            "whole grain", "classic",
        ),
        sizes=("250 g", "500 g", "1 kg", "2 kg"),
        size_prefix="",
        has_color=False,
        purposes=("breakfast", "everyday cooking", "snacking", "the pantry"),
        types=(
            ("coffee beans", 14, ("coffee filters", "coffee mug")),
            ("ground coffee", 10, ("coffee filters", "coffee maker")),
            ("green tea", 6, ("honey", "kettle")),
            ("black tea", 6, ("honey", "biscuits")),
            ("olive oil", 12, ("pasta", "balsamic vinegar")),
            ("balsamic vinegar", 8, ("olive oil",)),
            ("pasta", 3, ("pasta sauce", "olive oil")),
            ("pasta sauce", 5, ("pasta",)),
            ("basmati rice", 6, ("curry sauce",)),
            ("curry sauce", 4, ("basmati rice",)),
            ("breakfast cereal", 5, ("honey",)),
            ("rolled oats", 4, ("honey", "peanut butter")),
            ("honey", 8, ("rolled oats", "green tea")),
            ("peanut butter", 5, ("rolled oats", "strawberry jam")),
            ("strawberry jam", 4, ("peanut butter",)),
            ("dark chocolate", 3, ("ground coffee",)),
            ("biscuits", 3, ("black tea",)),
            ("potato chips", 3, ("sparkling water",)),
            ("sparkling water", 2, ("potato chips",)),
            ("mixed nuts", 8, ("dark chocolate",)),
            ("spice set", 20, ("olive oil",)),
        ),
        no_size=frozenset({"spice set"}),
        material_style="adjective",
    ),
    Department(
        name="Baby",
        brands=(
            "Cuddlin", "Babbu", "Tottie", "Nestly", "Bubsy",
            "Dimplet", "Tinytot", "Rockabye",
        ),
        materials=(
            "cotton", "organic cotton", "bamboo", "silicone", "plastic", "muslin",
            "fleece", "wool", "aluminium", "wood",
        ),
        sizes=(),
        size_prefix="",
        has_color=True,
        purposes=("newborns", "travel", "everyday use", "new parents"),
        types=(
            ("diapers", 25, ("baby wipes", "diaper cream")),
            ("baby wipes", 6, ("diapers",)),
            ("diaper cream", 8, ("diapers",)),
            ("baby bottle", 12, ("bottle brush", "bottle warmer")),
            ("bottle brush", 6, ("baby bottle",)),
            ("bottle warmer", 35, ("baby bottle",)),
            ("pacifier", 6, ("pacifier clip",)),
            ("pacifier clip", 5, ("pacifier",)),
            ("stroller", 300, ("baby blanket", "diaper bag")),
            ("diaper bag", 50, ("stroller", "diapers")),
            ("car seat", 200, ("stroller", "baby blanket")),
            ("high chair", 120, ("bib",)),
            ("bib", 6, ("high chair",)),
            ("baby monitor", 90, ("batteries",)),
            ("teething toy", 8, ("pacifier",)),
            ("crib", 250, ("crib sheet", "crib mattress")),
            ("crib sheet", 18, ("crib",)),
            ("crib mattress", 120, ("crib", "crib sheet")),
            ("baby blanket", 25, ("crib", "stroller")),
            ("baby carrier", 80, ("baby blanket",)),
        ),
        no_material=frozenset({"diapers", "baby wipes", "diaper cream"}),
        color_flip=frozenset({"diapers", "baby wipes", "diaper cream"}),
    ),
)
# fmt: on


def _flatten(departments: tuple[Department, ...]) -> tuple[ProductType, ...]:
    out = []
    for dept in departments:
        for name, base_price, complements in dept.types:
            out.append(
                ProductType(
                    name=name,
                    department=dept.name,
                    base_price=float(base_price),
                    complements=tuple(complements),
                    has_color=dept.has_color != (name in dept.color_flip),
                    has_material=bool(dept.materials) and name not in dept.no_material,
                    has_size=bool(dept.sizes) and name not in dept.no_size,
                )
            )
    return tuple(out)


#: Every product type, in department order.
PRODUCT_TYPES: tuple[ProductType, ...] = _flatten(DEPARTMENTS)

#: Complement relation: query product type -> types whose items get label 1 for it.
COMPLEMENTS: dict[str, tuple[str, ...]] = {t.name: t.complements for t in PRODUCT_TYPES}


def check_taxonomy() -> None:
    """Raise ``RuntimeError`` if the constant taxonomy breaks an invariant.

    Checked: unique department, type and brand names (a brand belongs to one department);
    every complement is a known type other than itself; 1-3 complements per type; every
    department flag set names types of that department.
    """
    problems: list[str] = []
    names = [t.name for t in PRODUCT_TYPES]
    if len(set(names)) != len(names):
        problems.append("duplicate product type names")
    if len({d.name for d in DEPARTMENTS}) != len(DEPARTMENTS):
        problems.append("duplicate department names")
    brands = [b for d in DEPARTMENTS for b in d.brands]
    if len({b.lower() for b in brands}) != len(brands):
        problems.append("a brand appears twice")
    known = set(names)
    for t in PRODUCT_TYPES:
        if not 1 <= len(t.complements) <= 3:
            problems.append(f"{t.name!r} has {len(t.complements)} complements (allowed 1-3)")
        for c in t.complements:
            if c not in known or c == t.name:
                problems.append(f"{t.name!r} has unknown or self complement {c!r}")
    for d in DEPARTMENTS:
        own = {name for name, _, _ in d.types}
        for flag in (d.color_flip, d.no_material, d.no_size):
            extra = set(flag) - own
            if extra:
                problems.append(f"{d.name}: flags name types of other departments: {extra}")
        if d.material_style not in MATERIAL_STYLES:
            problems.append(f"{d.name}: material_style must be one of {MATERIAL_STYLES}")
    if problems:
        raise RuntimeError("taxonomy is inconsistent: " + "; ".join(problems))


check_taxonomy()
