"""Vocabularies and templates for the demo generator's ad copy, advertisers and communities.

Pure data plus a small copy writer. Each vertical has brand-name parts, sub-themes (products and
the communities that discuss them), benefits, features, offers, audiences, calls to action and a
few vertical-specific templates on top of the generic ones below. Slot grammar (so any vertical's
words fit any template): products are plural or mass noun phrases ("trail running shoes"),
benefits are base-form verb phrases ("sleep better"), features and offers are noun phrases usable
after "with" / "Get", audiences are plural noun phrases.

`VERTICALS` is a compact table: strings use "|" between items; community entries are slugs,
optionally "slug:tier"; `age` is relative interest per AGE_ORDER bucket. It is data, hence long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

AGE_ORDER = ("13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")


@dataclass(frozen=True)
class Subtheme:
    key: str
    products: tuple[str, ...]
    communities: tuple[str, ...]


@dataclass(frozen=True)
class Vertical:
    key: str
    topic: str
    brand_a: tuple[str, ...]
    brand_b: tuple[str, ...]
    subthemes: tuple[Subtheme, ...]
    benefits: tuple[str, ...]
    features: tuple[str, ...]
    offers: tuple[str, ...]
    audiences: tuple[str, ...]
    ctas: tuple[str, ...]
    titles: tuple[str, ...]
    bodies: tuple[str, ...]
    age: tuple[float, ...]  # relative interest per AGE_ORDER bucket
    related: dict[str, float] = field(default_factory=dict)
    countries: dict[str, float] = field(default_factory=dict)  # interest multipliers
    weight: float = 1.0  # relative number of advertisers
    min_age: int | None = None  # campaigns always target at least this age
    hours: tuple[int, ...] = ()  # local hours of day when its ads are clicked more
    community: str = ""  # the vertical-wide community slug


def _t(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split("|") if x.strip())


def weights(s: str) -> dict[str, float]:
    """"a:0.5,b:0.2" -> {"a": 0.5, "b": 0.2}."""
    out: dict[str, float] = {}
    for part in _t(s.replace(",", "|")):
        k, v = part.split(":")
        out[k.strip()] = float(v)
    return out


def _v(key, topic, community, brand_a, brand_b, subs, benefits, features, offers, audiences, ctas,
       titles, bodies, age, related="", countries="", weight=1.0, min_age=None, hours=""):
    return Vertical(
        key=key, topic=topic, community=community, brand_a=_t(brand_a), brand_b=_t(brand_b),
        subthemes=tuple(Subtheme(k, _t(p), _t(c)) for k, (p, c) in subs.items()),
        benefits=_t(benefits), features=_t(features), offers=_t(offers), audiences=_t(audiences),
        ctas=_t(ctas), titles=_t(titles), bodies=_t(bodies),
        age=tuple(float(x) for x in age.split(",")), related=weights(related), countries=weights(countries),
        weight=weight, min_age=min_age, hours=tuple(int(h) for h in hours.split(",")) if hours else (),
    )


# Generic templates (any vertical). Capitalised slot names ({Product}) get a capital first letter.
TITLE_TEMPLATES = _t(
    "{Product} made for {audience}|Save {pct}% on {product} at {brand}|{Benefit} with {brand}"
    "|Ready to {benefit}? Try {brand}|New at {brand}: {product}|{Product} — {offer}"
    "|Why {audience} choose {brand}|{Product} with {feature}|Get {offer} at {brand}"
    "|{brand}: {product} built for {audience}|Top-rated {product} from {brand}"
    "|{brand} — the easier way to {benefit}|Looking for {product}? {brand} has you covered"
    "|{Benefit} with {product}|{Feature} on all {product}"
)
BODY_FIRST = _t(
    "Built for {audience}: {benefit} with {brand}.|Join thousands of {audience} already using {brand}."
    "|{Product} with {feature} and {feature2}.|Want to {benefit}? {brand} was made for {audience} like you."
    "|Discover {product} from {brand}, with {feature}.|Enjoy {feature} and {feature2}."
    "|{Product} from {brand}: the easy way to {benefit}.|{brand} makes it simple to {benefit}."
)
BODY_SECOND = _t(
    "Get {offer} {when}.|{Cta} at {domain}.|Rated {rating} out of 5 by {count} customers."
    "|Our team is here to help, 7 days a week.|Offer ends {day}.|Limited time only.|See why {audience} switch to {brand}."
)
WHEN = _t("this week|this weekend|this fall|before Black Friday|this month|today only|for a limited time")
DAYS = _t("Sunday|Friday|Monday|November 30|the end of the month")
PCTS = (10, 15, 20, 25, 30, 40, 50)
AMOUNTS = (5, 10, 15, 20, 25, 50, 100)
TRIAL_DAYS = (7, 14, 30)
OBJECTIVES = _t(
    "Fall sale|Awareness Q4|Retargeting|Prospecting|Holiday push|Always-on|Launch|Lead gen"
    "|Black Friday|Spring refresh|Conversions|Loyalty"
)
GENERIC_BRAND_A = _t(
    "North|Blue|Bright|Silver|Open|True|Clear|Golden|Little|Grand|Swift|Bold|Green|Red|Urban"
    "|Wild|Happy|Prime|Modern|Simple|Sunny|Cedar|Maple|Harbor|Atlas|Echo|Orbit|Lumen|Aster|Juniper"
)
GENERIC_BRAND_B = _t("Co|Labs|Collective|Works|House|Group|Studio|Supply|Hub|Partners|& Co")

# (slug[:tier], topic, related verticals with affinity)
GENERAL_COMMUNITIES: tuple[tuple[str, str, str], ...] = (
    ("news:sensitive", "news", "banking:0.2,insurance:0.2"),
    ("worldnews:sensitive", "news", "travel:0.2"),
    ("politics:sensitive", "politics", ""),
    ("askanything", "q&a", "education:0.2,jobs:0.2"),
    ("todayilearned", "trivia", "books:0.3,education:0.3"),
    ("pics", "pictures", "photography:0.5,travel:0.2"),
    ("memes", "humor", "gaming:0.4,streaming:0.3,mobile_apps:0.3"),
    ("funny", "humor", "streaming:0.3,mobile_apps:0.2"),
    ("showerthoughts", "humor", "books:0.1"),
    ("mildlyinteresting", "curiosities", "electronics:0.2,home_improvement:0.2"),
    ("aww", "animals", "pets:0.6"),
    ("lifeprotips", "life advice", "banking:0.3,groceries:0.3,home_improvement:0.2"),
    ("relationships:sensitive", "relationships", "dating:0.5"),
    ("truecrime:sensitive", "true crime", "streaming:0.4,books:0.3"),
    ("mentalhealth:sensitive", "mental health", "health_supplements:0.3,fitness:0.2"),
    ("unpopularopinion:sensitive", "discussion", ""),
    ("nightlife:mature", "nightlife", "music:0.4,dating:0.4,travel:0.2"),
    ("roastme:mature", "humor", "fashion:0.2,beauty:0.2"),
    ("afterdark:nsfw", "adult", "dating:0.4"),
    ("nsfw_art:nsfw", "adult art", "photography:0.3"),
    ("spicymemes:nsfw", "adult humor", "gaming:0.2"),
)

_SLOT = re.compile(r"\{(\w+)\}")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


VERTICALS: tuple[Vertical, ...] = (
    _v("gaming", "gaming", "gaming",
       "Pixel|Nova|Quest|Respawn|Loot|Arcade|Crit|Boss|Shard|Vortex|Neon|Raid",
       "Forge|Studios|Games|Interactive|Arcade|Entertainment|Labs|Works",
       {"pc": ("gaming laptops|mechanical keyboards|144Hz gaming monitors|RGB gaming mice|custom gaming PCs",
               "pcgaming|buildapc"),
        "console": ("console bundles|wireless controllers|next-gen console games|gaming headsets",
                    "consolegaming|playstation_fans"),
        "mobile": ("free-to-play mobile RPGs|puzzle games|strategy games for your phone|battle royale games",
                   "mobilegaming|gachagaming"),
        "tabletop": ("board games|tabletop RPG starter sets|miniature painting kits|card game booster packs",
                     "boardgames|dnd")},
       "level up faster|play with friends across platforms|win more matches|build your dream setup"
       "|game all night without lag",
       "zero input lag|cross-platform play|a 2-year warranty|free weekly events|exclusive in-game skins",
       "{pct}% off launch week|a free starter pack|double XP all weekend|free shipping on gear|an exclusive founder's skin",
       "competitive players|casual gamers|streamers|weekend raiders|strategy fans",
       "Play free|Install now|Shop now|Pre-order|Download",
       "Season 4 is live: {benefit}|Pre-order {product} and get {offer}|{brand} drops new {product}",
       "Over {count} players already joined. Your squad is waiting.|New maps every season, plus {feature}.",
       "4,6,4,2.5,1.2,0.5,0.2", "streaming:0.4,electronics:0.5,music:0.2", "US:1.1,BR:1.3,JP:1.4",
       weight=1.4, hours="18,19,20,21,22,23"),
    _v("fintech", "investing", "investing",
       "Ledger|Pocket|Quant|Vault|Coin|Stack|Yield|Alpha|Sprout|Mint|Bright|Nest",
       "Invest|Capital|Wealth|Money|Finance|Markets|Fund",
       {"investing_app": ("commission-free stock trading|fractional shares|automated investing portfolios|ETF investing",
                          "stocks|investing_101"),
        "budgeting": ("budgeting apps|spending trackers|bill reminders|savings goals",
                      "budgeting|frugal"),
        "retirement": ("IRA accounts|retirement planning tools|401k rollovers|robo-advisor portfolios",
                       "retirement|fire_movement"),
        "payments": ("instant money transfers|international payments|split-the-bill payments|virtual cards",
                     "digitalpayments")},
       "grow your savings on autopilot|invest with as little as $1|stop overspending|plan your retirement with confidence"
       "|send money abroad for less",
       "no account minimums|bank-level encryption|FDIC-insured cash balances|real-time alerts|zero commission trades",
       "a free stock when you sign up|${amount} bonus on your first deposit|{pct}% lower fees|zero fees for {days} days",
       "first-time investors|young professionals|freelancers|side hustlers|long-term savers",
       "Sign up|Get started|Open account|Download|Learn more",
       "Your money, working harder: {product}|Investing shouldn't be complicated. Try {brand}|{Product} in under 5 minutes",
       "Investing involves risk. {brand} keeps it transparent with {feature}.|Set a goal, pick a plan and let {brand} do the rest.",
       "0.1,2,4,3,2,1.2,0.6", "banking:0.5,crypto:0.4,b2b_software:0.1", "US:1.3,GB:1.2,IN:1.1",
       weight=1.1, min_age=18),
    _v("travel", "travel", "travel",
       "Wander|Jet|Atlas|Compass|Voyage|Horizon|Sky|Trail|Nomad|Harbor|Breeze|Globe",
       "Travel|Trips|Air|Escapes|Journeys|Stays|Getaways",
       {"flights": ("cheap flights|last-minute flights|business class upgrades|multi-city flight deals",
                    "travelhacks|awardtravel"),
        "hotels": ("boutique hotels|beach resorts|city break hotel stays|all-inclusive resorts",
                   "hotels|solotravel"),
        "rentals": ("vacation rentals|cabin getaways|villa rentals|campervan rentals",
                    "vanlife|cabinporn"),
        "tours": ("guided city tours|food tours|island-hopping cruises|safari packages",
                  "backpacking|cruises")},
       "see more of the world for less|travel on your own schedule|skip the tourist traps|book your dream trip in minutes"
       "|unwind somewhere new",
       "free cancellation|price-drop alerts|24/7 travel support|no booking fees|member-only prices",
       "{pct}% off fall getaways|${amount} off your first booking|a free night on stays of 4+|free checked bags",
       "solo travelers|families|couples|digital nomads|weekend explorers",
       "Book now|See deals|Explore|Plan your trip|Check prices",
       "Fly to Lisbon from ${amount}9|Escape the cold: {product} from {brand}|Weekend in Kyoto? {Offer}",
       "Where to next? {brand} compares thousands of {product} in seconds.|Pack light and travel smart with {feature}.",
       "0.3,3,4,3,2.4,2,1.5", "outdoor_gear:0.3,photography:0.3,luxury:0.2,insurance:0.1",
       "GB:1.2,DE:1.2,AU:1.2,NL:1.2", weight=1.2),
    _v("beauty", "beauty", "beauty",
       "Glow|Velvet|Petal|Lumi|Bloom|Aura|Silk|Dew|Rose|Muse|Pure|Halo",
       "Beauty|Cosmetics|Skin|Lab|Studio|Botanics|Care",
       {"skincare": ("vitamin C serums|retinol night creams|SPF 50 moisturizers|gentle cleansers",
                     "skincareaddiction|asianbeauty"),
        "makeup": ("long-wear foundations|matte lipsticks|eyeshadow palettes|waterproof mascaras",
                   "makeupaddiction"),
        "haircare": ("sulfate-free shampoos|curl creams|hair repair masks|heat protectant sprays",
                     "curlyhair|haircare"),
        "fragrance": ("eau de parfum|travel-size fragrances|scented body mists|fragrance discovery sets",
                      "fragrance")},
       "get glowing skin|look fresh all day|fix frizz for good|find your signature scent|simplify your routine",
       "dermatologist-tested formulas|cruelty-free ingredients|free samples with every order|shade-matching quizzes"
       "|recyclable packaging",
       "{pct}% off sitewide|a free mini with every order|free shipping over ${amount}|a free third item",
       "sensitive-skin shoppers|makeup lovers|curly-haired folks|minimalists|beauty beginners",
       "Shop now|Take the quiz|Discover|Try it|Get yours",
       "Your skin will thank you: {product}|The {brand} glow edit is here|{Product} that sold out twice",
       "Clean ingredients, real results: {feature}.|Over {count} five-star reviews for our {product}.",
       "3,5,4,3,2,1.3,0.7", "fashion:0.5,health_supplements:0.2,luxury:0.3", "FR:1.3,BR:1.2,US:1.0",
       weight=1.2),
    _v("b2b_software", "it & software", "sysadmin",
       "Cloud|Stack|Data|Flow|Sync|Signal|Pipe|Grid|Logic|Byte|Kite|Relay",
       "Works|Systems|Cloud|Ops|HQ|Labs|Software|IO",
       {"crm": ("CRM software|sales pipeline tools|lead scoring|customer success platforms",
                 "sales|startups"),
        "devtools": ("CI/CD pipelines|cloud hosting|observability dashboards|API monitoring",
                     "devops|programming"),
        "collaboration": ("project management software|team chat|shared docs|video meetings",
                          "projectmanagement|remotework"),
        "security": ("password managers for teams|endpoint security|single sign-on|phishing protection",
                     "cybersecurity|netsec")},
       "ship faster with fewer outages|close more deals|keep your team in sync|stop breaches before they start"
       "|save hours every week",
       "SOC 2 compliance|SSO and audit logs|a free tier forever|99.99% uptime|200+ integrations",
       "a {days}-day free trial|{pct}% off annual plans|a free onboarding call|free for teams under 10",
       "engineering teams|sales leaders|startup founders|IT admins|remote teams",
       "Start free trial|Book a demo|Get started|Request a quote|Learn more",
       "{Product} your engineers won't hate|Trusted by {count} teams: {brand}|Cut tool sprawl with {brand}",
       "Set up in minutes, scale to thousands of seats with {feature}.|See how {brand} helps you {benefit}.",
       "0.1,1.5,4,3.5,2.2,1,0.3", "jobs:0.4,electronics:0.3,education:0.2", "US:1.3,DE:1.2,IN:1.3,GB:1.1",
       weight=1.2, hours="8,9,10,11,12,13,14,15,16"),
    _v("food_delivery", "food", "food",
       "Fork|Munch|Dash|Plate|Spoon|Crave|Bite|Basil|Chili|Toast|Feast|Yum",
       "Eats|Kitchen|Delivery|Go|Express|Table|Box",
       {"restaurant": ("late-night pizza delivery|sushi delivery|burger delivery|Thai takeout",
                       "pizza|foodporn"),
        "meal_kits": ("meal kits|ready-to-cook dinners|family meal boxes|vegetarian meal kits",
                      "mealprep|cooking"),
        "healthy": ("salad bowls|keto meals|high-protein meal plans|plant-based meals",
                    "eatcheapandhealthy|vegan"),
        "coffee": ("coffee subscriptions|breakfast delivery|pastry boxes|cold brew bundles",
                   "coffee")},
       "get dinner in 30 minutes|skip the grocery run|eat healthier without trying|cook like a chef at home"
       "|feed the whole family for less",
       "no delivery fees|live order tracking|contactless delivery|flexible weekly plans|chef-designed recipes",
       "{pct}% off your first order|free delivery for {days} days|${amount} off your first box|a free dessert tonight",
       "busy parents|students|night owls|home cooks|office teams",
       "Order now|Get the app|Claim offer|See menu|Start cooking",
       "Hungry? {Product} in 30 minutes|Dinner sorted: {offer}|Tonight's craving: {product}",
       "Hundreds of local favorites, one app: {brand}.|Fresh ingredients, easy recipes and {feature}.",
       "2,4,4,3,2,1,0.5", "groceries:0.5,health_supplements:0.1", "US:1.0,IN:1.3,BR:1.2,GB:1.1",
       weight=1.2, hours="11,12,17,18,19,20,21"),
    _v("fitness", "fitness", "fitness",
       "Iron|Peak|Stride|Pulse|Core|Summit|Vital|Kinetic|Flex|Tempo|Apex|Rally",
       "Fit|Athletics|Gym|Motion|Performance|Training|Club",
       {"running": ("GPS running watches|carbon-plated running shoes|marathon training plans|running vests",
                    "running|marathon_training"),
        "strength": ("adjustable dumbbells|home gym racks|strength training programs|resistance bands",
                     "weightlifting|homegym"),
        "yoga": ("yoga mats|online yoga classes|pilates reformer sessions|meditation courses",
                 "yoga|pilates"),
        "cycling": ("smart indoor bikes|cycling training apps|road bike shoes|bike trainers",
                    "peloton_riders|cycling")},
       "hit a new personal best|train smarter at home|build strength in 20 minutes a day|stay consistent"
       "|recover faster",
       "personalized training plans|live coaching|a 60-day return window|heart-rate tracking|thousands of on-demand workouts",
       "{pct}% off memberships|a {days}-day free trial|free shipping on gear|your first class free",
       "new runners|home gym owners|yoga beginners|busy professionals|serious athletes",
       "Start training|Join today|Shop now|Try free|Get the plan",
       "Couch to 5K with {brand}|{Product} that keep up with you|Your strongest season starts with {product}",
       "Workouts that fit your schedule, with {feature}.|Coaches, plans and progress tracking in one app.",
       "1.5,4,4.5,3,2,1,0.4", "sports_gear:0.5,health_supplements:0.5,outdoor_gear:0.3", "US:1.1,AU:1.2,GB:1.1",
       weight=1.1, hours="5,6,7,17,18,19"),
    _v("pets", "pets", "pets",
       "Paw|Whisker|Fetch|Bark|Tail|Purr|Snout|Biscuit|Buddy|Scout|Pebble|Mochi",
       "Pets|Supply|Co|Friends|Pet Care|Pantry",
       {"dog": ("grain-free dog food|chew-proof dog toys|orthopedic dog beds|dog training courses",
                "dogs|dogtraining"),
         "cat": ("cat litter subscriptions|interactive cat toys|cat trees|wet cat food bundles",
                 "cats|catadvice"),
         "vet": ("pet insurance|online vet visits|flea and tick prevention|pet dental chews",
                 "askvet"),
         "aquarium": ("aquarium starter kits|reptile habitats|bird cages|fish food",
                      "aquariums|reptiles")},
       "keep your pet healthy and happy|stop the zoomies at 3am|save on pet essentials|keep tails wagging"
       "|spoil your pet without overspending",
       "vet-approved recipes|auto-ship discounts|free 24/7 vet chat|easy returns|human-grade ingredients",
       "{pct}% off your first auto-ship|a free toy with every order|free shipping over ${amount}|a free vet visit",
       "dog parents|cat lovers|new puppy owners|first-time pet owners|senior pet owners",
       "Shop now|Get a quote|Start auto-ship|Book a vet|Learn more",
       "Tails will wag: {product} from {brand}|Your pet deserves {product}|New puppy? Start with {brand}",
       "Every bowl made with {feature}.|Pet parents rate {brand} {rating} out of 5.",
       "1.5,2.5,4,3.5,3,2.5,2", "groceries:0.2,insurance:0.2,photography:0.1", "US:1.1,GB:1.2,AU:1.1"),
    _v("education", "learning", "learnprogramming",
       "Skill|Mentor|Brain|Scholar|Bright|Learn|Sage|Owl|Quill|Campus|Spark|Edu",
       "Academy|Learning|Institute|School|Tutors|Courses|Classroom",
       {"coding": ("coding bootcamps|Python courses|data science certificates|web development courses",
                   "codingbootcamp"),
        "languages": ("Spanish lessons|language learning apps|live English tutoring|Japanese courses",
                      "languagelearning|learnspanish"),
        "test_prep": ("SAT prep|GRE practice tests|IELTS preparation|MCAT courses",
                      "sat|gradschool"),
        "kids": ("math tutoring for kids|reading programs|STEM kits|online homework help",
                 "homeschool")},
       "learn a new skill in weeks|land a better job|ace your exams|speak confidently abroad|study at your own pace",
       "certificates employers trust|live mentors|self-paced lessons|a money-back guarantee|career coaching",
       "{pct}% off all courses|a free first lesson|a {days}-day free trial|scholarships up to ${amount}0",
       "career switchers|students|lifelong learners|parents of teens|exam takers",
       "Enroll now|Start learning|Try a free lesson|Apply today|Learn more",
       "From zero to job-ready with {brand}|{Product}: {offer}|Study smarter, not longer, with {product}",
       "Over {count} learners have used {brand} to {benefit}.|Short lessons, real projects and {feature}.",
       "5,5,3.5,2,1.2,0.8,0.5", "jobs:0.5,books:0.4,b2b_software:0.2,parenting:0.2", "IN:1.6,BR:1.2,US:1.0"),
    _v("automotive", "cars", "cars",
       "Torque|Apex|Drive|Motor|Road|Volt|Cruise|Axle|Piston|Gear|Summit|Rally",
       "Motors|Auto|Automotive|Cars|Garage|Drive",
       {"ev": ("electric SUVs|home EV chargers|electric hatchbacks|EV lease deals",
               "electricvehicles|teslamotors_fans"),
        "used": ("certified pre-owned cars|used trucks|cars under $15k|trade-in appraisals",
                 "whatcarshouldibuy|usedcars"),
        "parts": ("performance tires|dash cams|car detailing kits|all-weather floor mats",
                  "autodetailing|mechanicadvice"),
        "service": ("oil change plans|roadside assistance|car wash memberships|mobile mechanics",
                    "cartalk")},
       "drive electric for less|find the right car fast|keep your car like new|never get stranded again"
       "|trade in without the hassle",
       "0% APR financing|a 7-day money-back guarantee|free home delivery|certified inspections|a 100,000-mile warranty",
       "${amount}00 off MSRP|{pct}% off your first service|0% APR for 60 months|a free charger install",
       "commuters|first-time car buyers|road trippers|car enthusiasts|growing families",
       "Book a test drive|Get a quote|Shop inventory|Learn more|Find a dealer",
       "Test drive the new {product}|{Product} — {offer}|Your next car is 10 minutes away at {brand}",
       "Browse thousands of {product} with {feature}.|No haggling, no pressure — just {feature}.",
       "0.3,2.5,3.5,3.5,3,2,1", "insurance:0.4,outdoor_gear:0.1,electronics:0.2", "DE:1.4,US:1.1,IT:1.2",
       min_age=18),
    _v("real_estate", "housing", "realestate",
       "Key|Hearth|Home|Brick|Porch|Gable|Haven|Oak|Nest|Door|Plot|Lot",
       "Realty|Homes|Properties|Estates|Living|Mortgage",
       {"buying": ("homes for sale|first-time buyer programs|open house listings|new-build condos",
                   "firsttimehomebuyer"),
        "renting": ("apartments for rent|pet-friendly rentals|furnished studios|roommate matching",
                    "apartmentliving|renters"),
        "mortgage": ("mortgage pre-approval|refinancing offers|home equity loans|mortgage rate comparisons",
                     "mortgages"),
        "selling": ("instant home offers|home valuations|listing agents|staging services",
                    "homeowners")},
       "find your dream home|move in this month|lock in a lower rate|sell your home fast|stop paying someone else's mortgage",
       "virtual tours|no-fee applications|rate locks for 60 days|local agents|instant valuations",
       "${amount}00 off closing costs|one month free rent|a free home valuation|{pct}% off agent fees",
       "first-time buyers|renters|growing families|downsizers|investors",
       "See listings|Get pre-approved|Schedule a tour|Get my offer|Learn more",
       "Find your dream home {when}|{Product} near you|Rates just dropped: {product}",
       "Search {count} verified listings with {feature}.|Tour homes from your couch, then {benefit}.",
       "0,1.5,4,4,3,2,1", "home_improvement:0.5,banking:0.4,insurance:0.3,furniture:0.3", "US:1.2,AU:1.3,CA:1.2",
       min_age=18),
    _v("fashion", "fashion", "fashion",
       "Thread|Stitch|Loom|Denim|Cotton|Vogue|Linen|Hem|Tailor|Muse|Ivy|Sable",
       "Apparel|Clothing|Wear|Studio|Co|Collective|Label",
       {"streetwear": ("limited sneaker drops|oversized hoodies|graphic tees|cargo pants",
                       "sneakers|streetwear"),
        "workwear": ("tailored suits|wrinkle-free shirts|office dresses|leather loafers",
                     "malefashionadvice|femalefashion"),
        "sustainable": ("organic cotton basics|secondhand designer finds|recycled denim|capsule wardrobes",
                        "sustainablefashion|thriftstorehauls"),
        "accessories": ("leather handbags|minimalist watches|sunglasses|silk scarves",
                        "handbags")},
       "look sharp without trying|build a wardrobe that lasts|stand out from the crowd|dress better for less"
       "|find the perfect fit",
       "free returns|sizes XS to 4XL|ethically made fabrics|free alterations|next-day shipping",
       "{pct}% off new arrivals|free shipping over ${amount}|an extra {pct}% off sale items|${amount} off your first order",
       "sneakerheads|young professionals|minimalists|trend setters|conscious shoppers",
       "Shop now|Shop the drop|Discover|Get yours|See the collection",
       "The {brand} fall collection is here|{Product} you'll wear on repeat|Just dropped: {product}",
       "Designed in-house, made with {feature}.|New styles every week and {feature}.",
       "3.5,5,4,3,2,1.2,0.6", "beauty:0.5,luxury:0.4,sports_gear:0.2", "FR:1.3,IT:1.4,GB:1.1", weight=1.3),
    _v("streaming", "movies & tv", "television",
       "Reel|Flick|Binge|Cinema|Screen|Frame|Cast|Prime|Popcorn|Marquee|Scene|Studio",
       "Plus|TV|Play|Stream|Max|Now|Flix",
       {"movies": ("blockbuster movies|award-winning films|new movie premieres|classic film collections",
                   "movies|criterion"),
        "series": ("original series|true crime docuseries|reality shows|limited series",
                   "tvshows|bingewatching"),
        "anime": ("anime simulcasts|anime movies|manga adaptations|dubbed anime",
                  "anime"),
        "sports_tv": ("live football streams|NBA league passes|live F1 coverage|tennis grand slams",
                      "sportsstreams")},
       "watch anywhere, anytime|never miss a premiere|binge the whole season tonight|stream live games in 4K"
       "|cancel cable for good",
       "4K HDR streaming|offline downloads|no ads on premium|5 profiles per account|new episodes every Friday",
       "your first month free|{pct}% off the annual plan|a {days}-day free trial|3 months for ${amount}",
       "binge-watchers|anime fans|movie buffs|sports fans|families",
       "Start watching|Try free|Stream now|Subscribe|Watch the trailer",
       "Now streaming: {product}|Your weekend, sorted: {product}|The finale everyone's talking about is on {brand}",
       "Thousands of titles, {feature} and {feature2}.|Cancel anytime. New {product} every week.",
       "3,5,4,3,2,1.5,1", "music:0.4,gaming:0.3,books:0.2,sports_gear:0.1", "US:1.1,BR:1.3,MX:1.3",
       weight=1.1, hours="19,20,21,22,23,0"),
    _v("crypto", "crypto", "cryptocurrency",
       "Block|Chain|Satoshi|Hash|Token|Ether|Node|Ledger|Moon|Orbit|Vault|Sol",
       "Exchange|Wallet|Labs|Finance|Protocol|Markets|X",
       {"exchange": ("low-fee crypto trading|bitcoin buying|crypto exchange accounts|recurring crypto buys",
                     "bitcoin|cryptomarkets"),
        "wallet": ("hardware wallets|self-custody wallets|multi-chain wallets|seed phrase backups",
                   "cryptowallets"),
        "defi": ("staking rewards|DeFi yield tools|stablecoin savings|liquidity pools",
                 "defi|ethereum"),
        "nft": ("NFT marketplaces|digital collectibles|web3 games|creator tokens",
                "nftmarket:sensitive")},
       "buy your first bitcoin in minutes|keep your keys safe|earn rewards on your crypto|trade 24/7",
       "cold storage|two-factor security|proof of reserves|low trading fees|24/7 live support",
       "${amount} in bitcoin when you sign up|{pct}% off trading fees|zero fees for {days} days",
       "crypto beginners|active traders|long-term holders|web3 builders",
       "Sign up|Buy crypto|Get started|Download|Learn more",
       "Crypto, minus the complexity: {brand}|{Product} — {offer}|Your keys, your coins: {product}",
       "Crypto is volatile; {brand} gives you {feature} and {feature2}.|Join {count} users and {benefit}.",
       "0,3.5,4,2.5,1.2,0.6,0.2", "fintech:0.5,gaming:0.2,electronics:0.2", "US:1.0,BR:1.3,IN:1.2,DE:1.1",
       weight=0.8, min_age=18),
    _v("insurance", "insurance", "insurance",
       "Shield|Guard|Harbor|Anchor|Safe|Trust|Cover|Beacon|Keystone|Umbrella|Fort|Ally",
       "Insurance|Assurance|Mutual|Cover|Protect|Life",
       {"car_ins": ("car insurance|usage-based auto insurance|multi-car discounts|young driver policies",
                    "carinsurance"),
         "home_ins": ("home insurance|renters insurance|flood coverage|landlord policies",
                      "homeinsurance"),
         "life": ("term life insurance|whole life policies|income protection|critical illness cover",
                  "lifeinsurance"),
         "health_ins": ("health insurance plans|dental plans|travel medical insurance|vision coverage",
                        "healthinsurance")},
       "save on your premium|get covered in minutes|protect what matters most|file claims from your phone",
       "claims paid in 48 hours|no paperwork|bundle discounts|cancel anytime|licensed agents on call",
       "{pct}% off when you bundle|a free quote in 2 minutes|your first month free|up to ${amount}0 cashback",
       "new drivers|homeowners|renters|young families|retirees",
       "Get a quote|Compare plans|Learn more|Get covered",
       "Drivers switching to {brand} save {pct}%|{Product} from ${amount} a month|Is your family covered? Compare {product}",
       "Compare {product} side by side and {benefit}.|Straight answers, {feature} and {feature2}.",
       "0,1,3,4,4,3.5,2.5", "automotive:0.4,real_estate:0.3,banking:0.3,travel:0.1", "US:1.2,DE:1.2,GB:1.1",
       min_age=18),
    _v("home_improvement", "diy", "diy",
       "Hammer|Plank|Craft|Brick|Nail|Beam|Bench|Toolbox|Level|Anvil|Rivet|Sawdust",
       "Tools|Home|Supply|Works|Hardware|Build",
       {"tools": ("cordless drills|power tool kits|smart tape measures|workbench organizers",
                  "tools|woodworking"),
         "renovation": ("kitchen remodels|bathroom renovations|flooring installation|interior painting services",
                        "homeimprovement|renovation"),
         "smart_home": ("smart thermostats|video doorbells|smart lighting kits|home security cameras",
                        "smarthome|homeautomation"),
         "energy": ("solar panels|heat pumps|home insulation|energy audits",
                    "solar|heatpumps")},
       "finish your weekend project faster|cut your energy bill|renovate without the stress|make your home smarter",
       "a lifetime warranty|free in-home estimates|pro-grade batteries|same-day pickup|licensed installers",
       "{pct}% off power tools|a free estimate|${amount}00 off installation|free delivery on orders over ${amount}",
       "DIYers|homeowners|weekend warriors|landlords|first-time renovators",
       "Shop now|Get an estimate|Book a consult|Find a pro|Learn more",
       "Weekend project? {Product} from {brand}|Lower bills start with {product}|Tools pros trust: {brand}",
       "From the first cut to the final coat, {brand} has you covered with {feature}.|Homeowners save with {product} and {feature}.",
       "0.2,1.2,3,4,4,3,2", "real_estate:0.4,gardening:0.4,furniture:0.4,electronics:0.2", "US:1.2,DE:1.2,CA:1.2"),
    _v("outdoor_gear", "outdoors", "outdoors",
       "Ridge|Alpine|Timber|Basecamp|Summit|Trail|Canyon|Glacier|Pine|Boulder|Cairn|Fjord",
       "Outdoor|Gear|Outfitters|Supply|Expedition|Mountain Co",
       {"hiking": ("waterproof hiking boots|ultralight backpacks|trekking poles|hiking rain jackets",
                   "hiking|ultralight"),
         "camping": ("4-season tents|down sleeping bags|camp stoves|portable power stations",
                     "camping"),
         "climbing": ("climbing shoes|harnesses|bouldering crash pads|climbing ropes",
                      "climbing|bouldering"),
         "water": ("inflatable kayaks|paddleboards|dry bags|wetsuits",
                   "kayaking")},
       "stay dry on every trail|pack lighter|sleep warm under the stars|go further outdoors",
       "a lifetime repair program|recycled materials|free trail-tested returns|expert gear advice|ultralight designs",
       "{pct}% off end-of-season gear|free shipping on gear|${amount} off your first order|member savings of {pct}%",
       "hikers|weekend campers|climbers|paddlers|thru-hikers",
       "Shop gear|Shop now|Explore|Find your fit",
       "Built for the backcountry: {product}|Trail-tested {product} from {brand}|Gear up for fall hiking with {product}",
       "Made to last seasons, not weekends — with {feature}.|Pack smarter for your next adventure.",
       "1,3,4,3.5,2.5,1.5,0.8", "travel:0.4,fitness:0.3,photography:0.3,sports_gear:0.3",
       "US:1.1,CA:1.3,DE:1.3,SE:1.4,AU:1.2"),
    _v("parenting", "parenting", "parenting",
       "Tiny|Little|Cradle|Bubba|Sprout|Nest|Lullaby|Button|Cuddle|Tot|Acorn|Pebble",
       "Baby|Kids|Family|Nursery|Co|Steps",
       {"baby_gear": ("convertible car seats|lightweight strollers|baby monitors|baby carriers",
                      "beyondthebump|newparents"),
         "diapers": ("eco-friendly diapers|baby wipes subscriptions|formula subscriptions|nursing bras",
                     "breastfeeding"),
         "kids_activities": ("kids' swim lessons|summer camps|toddler music classes|STEM toys",
                             "toddlers"),
         "family_planning": ("prenatal vitamins|fertility trackers|pregnancy pillows|birth classes",
                             "babybumps")},
       "get more sleep this month|keep your little one safe|make mornings easier|find activities kids love",
       "pediatrician-approved designs|free returns for 100 days|subscription savings|easy-clean fabrics|safety-tested materials",
       "{pct}% off your first box|a free registry gift|free shipping on diapers|${amount} off car seats",
       "new parents|expecting parents|busy moms|dads|parents of toddlers",
       "Shop now|Start registry|Sign up|Learn more|Book a class",
       "New parent? Start with {product}|Sleep-deprived? {brand} can help|{Product} parents actually recommend",
       "Designed by parents, tested for safety, with {feature}.|Everything on your checklist, delivered.",
       "0,1.2,5,4,1.2,0.5,0.3", "education:0.3,groceries:0.3,insurance:0.2,health_supplements:0.2", "",
       min_age=18),
    _v("health_supplements", "nutrition", "supplements",
       "Vita|Nutri|Green|Pure|Root|Sun|Balance|Thrive|Herb|Zen|Well|Vital",
       "Nutrition|Health|Labs|Naturals|Wellness|Botanicals",
       {"protein": ("whey protein|plant protein powders|protein bars|creatine monohydrate",
                    "fitness_nutrition"),
         "vitamins": ("daily multivitamins|vitamin D3|omega-3 fish oil|personalized vitamin packs",
                      "nutrition"),
         "sleep": ("magnesium sleep gummies|melatonin-free sleep aids|herbal teas|calming adaptogens",
                   "sleep"),
         "gut": ("probiotics|greens powders|fiber supplements|digestive enzymes",
                 "guthealth")},
       "sleep better|recover faster after workouts|support your immune system|feel more energized",
       "third-party tested ingredients|no artificial sweeteners|subscribe-and-save pricing|vegan formulas|clinically studied doses",
       "{pct}% off your first subscription|a free shaker bottle|a free third item|free shipping over ${amount}",
       "athletes|busy professionals|light sleepers|vegans|active seniors",
       "Shop now|Subscribe|Take the quiz|Try it",
       "Better sleep starts tonight: {product}|{Product} with nothing to hide|Your daily boost: {product}",
       "Made with {feature}. These statements have not been evaluated by the FDA.|Formulated with {feature}, loved by {audience}.",
       "0.5,3,4,3.5,3,2.5,2", "fitness:0.5,groceries:0.2,beauty:0.2", "US:1.3,AU:1.1,DE:1.0"),
    _v("mobile_apps", "apps", "androidapps",
       "Snap|Tap|Swipe|Ping|Loop|Dot|Buzz|Zap|Fizz|Jolt|Blip|Nudge",
       "App|Mobile|ly|Labs|Go|Hub",
       {"productivity": ("to-do list apps|note-taking apps|calendar apps|habit trackers",
                         "productivity"),
         "photo_apps": ("photo editing apps|video editors|AI photo enhancers|collage makers",
                        "photoediting"),
         "social": ("messaging apps|community apps|event planning apps|local meetup apps",
                    "socialmedia"),
         "utilities": ("VPN apps|phone cleaners|file transfer apps|password vaults",
                       "privacy|iosapps")},
       "get organized in minutes|edit like a pro on your phone|stay private online|never forget a task",
       "no ads|offline mode|end-to-end encryption|cloud sync across devices|a 4.8-star rating",
       "Premium free for {days} days|{pct}% off Pro|lifetime access for ${amount}|a free-forever plan",
       "students|creators|busy professionals|privacy-minded users|iPhone owners",
       "Install now|Download|Get the app|Try free",
       "The app {audience} can't stop using|{Product}, reimagined by {brand}|Download {brand} free",
       "Rated {rating} by {count} users. {Feature} and {feature2}.|Set up in seconds; works on iOS and Android.",
       "3,5,4,3,2,1,0.5", "gaming:0.3,photography:0.3,b2b_software:0.2,telecom:0.2", "IN:1.5,BR:1.3,US:1.0",
       weight=1.2),
    _v("electronics", "tech", "gadgets",
       "Volt|Circuit|Pixel|Quantum|Echo|Nano|Photon|Sonic|Zen|Wave|Axis|Flux",
       "Electronics|Tech|Audio|Devices|Labs|Digital",
       {"audio": ("noise-cancelling headphones|wireless earbuds|smart speakers|soundbars",
                  "headphones|audiophile"),
         "phones": ("unlocked smartphones|phone cases|fast chargers|refurbished phones",
                    "android|iphone"),
         "computers": ("ultrabooks|4K monitors|mechanical keyboards for work|portable SSDs",
                       "laptops|hardware"),
         "tv": ("OLED TVs|streaming sticks|home theater projectors|universal remotes",
                "hometheater")},
       "hear every detail|work from anywhere|upgrade your setup|get more battery life",
       "a 2-year warranty|free next-day delivery|trade-in credit|price match guarantee|30-hour battery life",
       "{pct}% off this week|${amount} off with trade-in|free shipping|a free case with every phone",
       "audiophiles|remote workers|tech enthusiasts|students|home theater fans",
       "Shop now|Buy now|Compare models|Learn more|Pre-order",
       "Meet the new {product}|{Product}: {offer}|Upgrade season: {product} from {brand}",
       "Reviewers rank our {product} among the best of the year.|Free trade-in quotes and {feature}.",
       "2,4,4,3.5,2.5,1.5,0.8", "gaming:0.4,photography:0.3,b2b_software:0.2,telecom:0.3,music:0.2",
       "US:1.1,JP:1.3,DE:1.1,IN:1.1", weight=1.2),
    _v("books", "books", "books",
       "Page|Chapter|Ink|Quill|Shelf|Story|Folio|Verse|Novel|Margin|Spine|Lantern",
       "Books|Press|Reads|Publishing|Audio|Library",
       {"audiobooks": ("audiobooks|podcast-style audio courses|narrated bestsellers|kids' audiobooks",
                       "audiobooks"),
         "ebooks": ("e-readers|ebook subscriptions|digital comics|unlimited reading plans",
                    "kindle|ebooks"),
         "fiction": ("fantasy series|thriller novels|romance bestsellers|signed first editions",
                     "fantasy|suggestmeabook"),
         "nonfiction": ("history books|self-help bestsellers|business books|science books",
                        "nonfictionbooks")},
       "read more this year|turn your commute into reading time|find your next favorite book|escape into a story",
       "thousands of titles|offline listening|adjustable narration speed|free book club picks|glare-free screens",
       "your first audiobook free|{pct}% off bestsellers|a {days}-day free trial|a fourth book free",
       "bookworms|commuters|fantasy fans|students|book clubs",
       "Start listening|Start reading|Shop books|Try free",
       "The book everyone's talking about is on {brand}|Your next great read: {product}|Listen free for {days} days",
       "Curated picks, {feature} and {feature2}.|{count} readers found their next favorite with {brand}.",
       "2.5,3,3,3,3,3,3", "education:0.4,streaming:0.2,music:0.1", "GB:1.2,US:1.0,DE:1.1"),
    _v("music", "music", "music",
       "Beat|Chord|Riff|Echo|Melody|Tempo|Vinyl|Groove|Harmony|Bass|Cadence|Treble",
       "Music|Sound|Records|Audio|Studio|Live",
       {"instruments": ("beginner guitars|digital pianos|drum kits|ukuleles",
                        "guitar|piano"),
         "lessons": ("online guitar lessons|singing courses|music theory classes|DJ courses",
                     "wearethemusicmakers"),
         "concerts": ("concert tickets|festival passes|VIP meet-and-greets|live music events",
                      "festivals|concerts"),
         "production": ("audio interfaces|studio monitors|beat-making software|USB microphones",
                        "edmproduction|homerecording")},
       "learn your first song this week|make music at home|see your favorite artist live|record studio-quality tracks",
       "free setup guides|interactive lessons|official tickets|a 30-day return policy|pro-grade sound",
       "{pct}% off instruments|a free first lesson|presale access|{days} days free",
       "beginner musicians|producers|festival goers|songwriters|vinyl collectors",
       "Get tickets|Start playing|Shop now|Try free|Learn more",
       "Tickets on sale now: {product}|Play your first song with {brand}|{Product} for every level",
       "From first chords to full songs, {brand} helps you {benefit}.|Presale ends soon. {Feature}.",
       "3,5,4,2.5,1.5,1,0.6", "streaming:0.4,electronics:0.3,education:0.2", "US:1.0,GB:1.2,BR:1.2"),
    _v("sports_gear", "sports", "sports",
       "Goal|Striker|Court|Pitch|Rally|Dunk|Ace|Sprint|Champion|Field|Swing|Slam",
       "Sports|Athletic|Pro|Gear|Club|League",
       {"football": ("football boots|replica jerseys|training balls|shin guards",
                     "soccer|footballkits"),
         "basketball": ("basketball shoes|outdoor basketballs|hoop systems|compression sleeves",
                        "basketball"),
         "racket": ("tennis rackets|pickleball paddles|padel rackets|squash shoes",
                    "tennis|pickleball"),
         "golf": ("golf drivers|golf balls|rangefinders|golf lessons",
                  "golf")},
       "play your best game|upgrade your kit|train like a pro|dominate the court",
       "pro-level materials|custom fitting|free name printing|a 90-day performance guarantee|free returns",
       "{pct}% off this season's kits|free shipping over ${amount}|a free ball with every order|team discounts",
       "weekend players|team captains|golfers|pickleball fans|young athletes",
       "Shop now|Shop the kit|Find your fit|Book a lesson",
       "Match day ready: {product}|The new {product} has landed|Your game, upgraded: {product}",
       "Trusted by clubs and {audience}, with {feature}.|Gear up for the season with {brand}.",
       "4,4,3.5,3,2.5,2,1", "fitness:0.4,fashion:0.2,streaming:0.2,outdoor_gear:0.2", "BR:1.5,GB:1.3,ES:1.3,IT:1.2,US:1.0"),
    _v("dating", "dating", "dating",
       "Spark|Match|Heart|Cupid|Flame|Crush|Kindred|Swipe|Amor|Tandem|Duet|Bloom",
       "Dating|Date|Connect|Singles|Love|Match",
       {"apps": ("dating apps|video dating|compatibility quizzes|verified profiles",
                 "dating_advice"),
         "serious": ("matchmaking services|relationship-focused dating|marriage-minded matches|curated introductions",
                     "relationship_advice:sensitive"),
         "niche": ("dating for professionals|over-50 dating|LGBTQ+ dating|faith-based dating",
                   "datingoverforty"),
         "events": ("singles events|speed dating nights|singles travel|social clubs",
                    "socialskills")},
       "meet someone worth texting back|find a real connection|date with intention|meet people near you",
       "verified profiles|smart matching|video chat|safety features|no endless swiping",
       "a free week of Premium|{pct}% off your first month|free sign-up|a free matchmaker consult",
       "busy professionals|singles over 40|newly single people|people ready for something real",
       "Join free|Download|Find matches|Sign up",
       "Tired of swiping? Try {brand}|{Product} that lead to real dates|Singles near you are on {brand}",
       "{count} couples met on {brand}, thanks to {feature}.|Answer a few questions and meet your matches today.",
       "0,4,5,3,2,1.2,0.5", "fashion:0.2,beauty:0.2,travel:0.1,music:0.2", "US:1.1,GB:1.1,BR:1.2",
       weight=0.8, min_age=18, hours="20,21,22,23"),
    _v("jobs", "careers", "careerguidance",
       "Hire|Career|Talent|Work|Job|Next|Ladder|Bridge|Launch|Pivot|Quest|Summit",
       "Jobs|Careers|Works|Hire|Talent|Staffing",
       {"job_search": ("remote jobs|tech jobs|part-time jobs|entry-level roles",
                       "jobs|remotejobs"),
         "resume": ("resume reviews|AI resume builders|cover letter templates|LinkedIn makeovers",
                    "resumes"),
         "freelance": ("freelance gigs|contract work|creator marketplaces|delivery driver shifts",
                       "freelance|workonline"),
         "hiring": ("job posting tools|applicant tracking|background checks|recruiting services",
                    "recruiting|humanresources")},
       "land interviews faster|get paid what you're worth|work from anywhere|hire great people fast",
       "salary insights|one-click apply|verified employers|free resume templates|weekly payouts",
       "a free resume review|your first job post free|{pct}% off Premium|{days} days of Premium free",
       "job seekers|career switchers|new grads|freelancers|hiring managers",
       "Apply now|Search jobs|Post a job|Get started|Upload resume",
       "{count} new {product} this week|Hiring now: {product}|Your next role is on {brand}",
       "Search {product} by salary, location and {feature}.|Employers on {brand} reply within 48 hours.",
       "1,5,4.5,3,2,1,0.2", "education:0.5,b2b_software:0.2,fintech:0.1", "IN:1.5,US:1.1,GB:1.1,BR:1.2",
       min_age=18, hours="8,9,10,11,12,13,14"),
    _v("telecom", "mobile & internet", "mobilenetworks",
       "Signal|Wave|Link|Net|Fiber|Air|Spectrum|Ping|Orbit|Beam|Tower|Relay",
       "Mobile|Telecom|Wireless|Connect|Fibre|Net",
       {"mobile_plans": ("unlimited data plans|prepaid SIM cards|family phone plans|5G plans",
                         "phoneplans"),
         "home_internet": ("fiber broadband|5G home internet|mesh Wi-Fi systems|gigabit internet",
                           "homenetworking|isp"),
         "roaming": ("travel eSIMs|international roaming packs|global data plans|pocket Wi-Fi rentals",
                     "esim"),
         "devices_finance": ("phone upgrade programs|device protection plans|trade-in deals|refurbished phone plans",
                             "phonedeals")},
       "stay connected everywhere|stop buffering for good|cut your phone bill|keep your number and switch easily",
       "no annual contract|5G coverage nationwide|free installation|unlimited calls and texts|price lock for 3 years",
       "{pct}% off for 12 months|${amount} off your first bill|a free router|a free month of service",
       "families|heavy streamers|frequent travelers|students|remote workers",
       "Switch now|Check availability|See plans|Get an eSIM|Shop phones",
       "Unlimited data from ${amount} a month|Switch to {brand}, keep your number|{Product}: {offer}",
       "Check coverage at your address in seconds.|{Product} with {feature} and {feature2}.",
       "1.5,3.5,4,3.5,3,2.5,2", "electronics:0.4,mobile_apps:0.2,travel:0.2", "IN:1.4,BR:1.3,MX:1.2,US:1.0"),
    _v("banking", "personal finance", "personalfinance",
       "First|Harbor|Summit|Oak|Liberty|Sterling|Pioneer|Heritage|Keystone|Meridian|Prairie|River",
       "Bank|Savings|Credit|Financial|Trust|Lending",
       {"savings": ("high-yield savings accounts|certificates of deposit|savings pots|money market accounts",
                    "savings"),
         "credit_cards": ("cash back credit cards|travel rewards cards|balance transfer cards|student credit cards",
                          "creditcards|churning"),
         "loans": ("personal loans|student loan refinancing|debt consolidation loans|auto loans",
                   "debtfree|studentloans"),
         "checking": ("no-fee checking accounts|early direct deposit|business checking|joint accounts",
                      "banking_help")},
       "earn more on your savings|pay off debt faster|build your credit|bank without fees",
       "FDIC insurance|no monthly fees|4.5% APY|a free credit score|55,000 fee-free ATMs",
       "a ${amount}0 sign-up bonus|0% intro APR for 18 months|{pct}% cash back for 3 months|a card with no annual fee",
       "savers|students|small business owners|new graduates|families",
       "Open account|Apply now|Check your rate|Learn more",
       "Earn 4.5% APY with {brand}|{Product} with {offer}|{Product}: check your rate without hurting your score",
       "Member FDIC. {Product} with {feature}.|Apply in minutes and {benefit}.",
       "0.1,2.5,4,3.5,3,2.5,2", "fintech:0.5,real_estate:0.3,insurance:0.3", "US:1.3,GB:1.1,CA:1.2",
       min_age=18),
    _v("luxury", "luxury", "watches",
       "Aurum|Maison|Regent|Sovereign|Noble|Crown|Velour|Opal|Sable|Laurel|Onyx|Ivoire",
       "& Fils|Paris|Atelier|Maison|Milano|House",
       {"watches": ("Swiss automatic watches|chronographs|dive watches|certified pre-owned watches",
                    "luxurywatches"),
         "jewelry": ("diamond engagement rings|gold necklaces|lab-grown diamonds|pearl earrings",
                     "jewelry|engagementrings"),
         "leather": ("designer handbags|leather weekenders|silk ties|cashmere coats",
                     "luxuryfashion"),
         "experiences": ("private yacht charters|Michelin-star dining|first-class getaways|private jet cards",
                         "luxurytravel")},
       "own a piece of history|celebrate the moment in style|travel in absolute comfort|treat yourself",
       "Swiss craftsmanship|lifetime servicing|complimentary engraving|certified authenticity|private appointments",
       "complimentary engraving|a private viewing|free insured shipping|an exclusive preview",
       "collectors|connoisseurs|couples getting engaged|discerning travelers",
       "Discover|Book an appointment|Explore the collection|Enquire",
       "Timeless {product} by {brand}|The {brand} Heritage collection|Crafted for a lifetime: {product}",
       "Each piece comes with {feature} and {feature2}.|Visit our boutique or book a private appointment.",
       "0.1,1,3,4,4,3,2", "fashion:0.4,travel:0.4,beauty:0.3,automotive:0.2", "US:1.0,FR:1.3,IT:1.3,JP:1.3",
       weight=0.7, min_age=18),
    _v("groceries", "groceries", "grocery",
       "Fresh|Basket|Harvest|Market|Pantry|Orchard|Field|Daily|Corner|Greens|Grain|Dairy",
       "Market|Grocer|Foods|Pantry|Fresh|Goods",
       {"online_grocery": ("same-day grocery delivery|weekly grocery boxes|bulk pantry staples|click-and-collect groceries",
                           "groceries"),
         "organic": ("organic produce boxes|farm-fresh eggs|local dairy|seasonal fruit boxes",
                     "organicfood"),
         "snacks": ("healthy snack boxes|craft chocolate|international snacks|protein snacks",
                    "snacking"),
         "household": ("eco cleaning supplies|laundry pods|paper towel subscriptions|refillable soap",
                       "cleaningtips|zerowaste")},
       "skip the checkout line|cut your grocery bill|eat more seasonally|never run out of essentials",
       "1-hour delivery|price match on staples|no bag fees|farm-direct sourcing|subscribe-and-save pricing",
       "${amount} off your first order|free delivery for {days} days|{pct}% off organic produce|a free tote bag",
       "busy families|home cooks|students|health-conscious shoppers|eco-minded households",
       "Order now|Shop groceries|Get the app|Start saving",
       "Groceries in an hour from {brand}|Fill your fridge, not your calendar, with {brand}|{Product} at warehouse prices",
       "Thousands of products delivered with {feature}.|Your weekly shop, done in five minutes.",
       "0.5,2.5,4,4,3,2.5,2", "food_delivery:0.5,parenting:0.2,health_supplements:0.2", "GB:1.3,US:1.0,DE:1.1",
       hours="9,10,11,17,18"),
    _v("gardening", "gardening", "gardening",
       "Sprout|Leaf|Fern|Bloom|Root|Moss|Clover|Meadow|Willow|Thyme|Sage|Ivy",
       "Garden|Gardens|Seeds|Nursery|Grow|Plants",
       {"houseplants": ("rare houseplants|self-watering pots|grow lights|plant food",
                        "houseplants|plantclinic"),
         "vegetables": ("heirloom seed packs|raised garden beds|tomato starter kits|compost bins",
                        "vegetablegardening"),
         "lawn": ("robotic lawn mowers|organic lawn feed|leaf blowers|sprinkler timers",
                  "lawncare"),
         "landscaping": ("garden design services|patio pavers|outdoor lighting|fruit trees",
                         "landscaping")},
       "grow your own food|keep houseplants thriving|get a greener lawn|turn your backyard into a retreat",
       "a 1-year plant guarantee|expert plant care tips|peat-free soil|free delivery on bulky items|native plant varieties",
       "{pct}% off bulbs and seeds|a free plant with orders over ${amount}|free delivery this weekend|{pct}% off raised beds",
       "new gardeners|houseplant lovers|homeowners|balcony growers|retirees",
       "Shop plants|Shop now|Plan your garden|Learn more",
       "Fall planting starts now: {product}|Keep it green with {brand}|{Product} that are hard to kill",
       "Every order arrives healthy, with {feature}.|Gardeners love {brand} for {feature}.",
       "0.1,1,2.5,3,3.5,4,4", "home_improvement:0.5,groceries:0.2,outdoor_gear:0.2", "GB:1.4,DE:1.2,NL:1.3"),
    _v("photography", "photography", "photography",
       "Lens|Shutter|Aperture|Focus|Frame|Prism|Exposure|Flash|Tripod|Pixel|Optic|Bokeh",
       "Camera|Photo|Imaging|Optics|Studio|Labs",
       {"cameras": ("mirrorless cameras|full-frame camera bodies|action cameras|instant cameras",
                    "cameras|mirrorless"),
         "lenses": ("prime lenses|telephoto lenses|wide-angle lenses|lens filters",
                    "lenses"),
         "editing": ("photo editing presets|RAW editing software|cloud photo storage|photo books",
                     "postprocessing"),
         "drones": ("camera drones|gimbals|FPV drones|drone photography courses",
                    "drones")},
       "take sharper photos|capture the whole trip|edit in half the time|shoot like a pro",
       "weather-sealed bodies|in-body stabilization|free cleaning kits|trade-in credit|8K video",
       "${amount}0 off camera kits|{pct}% off lenses|a free memory card|trade-in bonus credit",
       "hobby photographers|wedding photographers|content creators|travel shooters",
       "Shop cameras|Shop now|Compare|Learn more|Pre-order",
       "Shoot the season with {product}|{Product} photographers swear by|{brand} — see more, shoot more",
       "Built for {audience}, with {feature} and {feature2}.|Capture every detail with {brand}.",
       "1,3,4,3.5,2.5,2,1.5", "travel:0.4,electronics:0.5,outdoor_gear:0.3", "JP:1.4,US:1.0,DE:1.2"),
    _v("furniture", "interior design", "interiordesign",
       "Loft|Nook|Oak|Haven|Linen|Cove|Ember|Slate|Maple|Willow|Dune|Terra",
       "Home|Living|Furniture|Interiors|Design|Goods",
       {"sofas": ("modular sofas|sectional couches|sleeper sofas|accent chairs",
                  "malelivingspace|furniture"),
         "bedroom": ("memory foam mattresses|bed frames|organic bedding|blackout curtains",
                     "mattress"),
         "office": ("standing desks|ergonomic office chairs|monitor arms|desk lamps",
                    "workspaces|battlestations"),
         "decor": ("area rugs|wall art prints|ceramic vases|statement lighting",
                   "amateurroomporn")},
       "sleep better tonight|make a small space feel bigger|work comfortably from home|refresh your living room",
       "a 100-night trial|free white-glove delivery|10-year warranty|easy assembly|stain-resistant fabrics",
       "{pct}% off sitewide|free delivery|${amount}0 off mattresses|a free pillow set",
       "first-apartment renters|remote workers|new homeowners|small-space dwellers",
       "Shop now|Shop the sale|Find your style|Take the quiz",
       "The {product} with {pct}% off this week|Your living room, upgraded: {product}|{Product} designed to last",
       "Try it at home with {feature}.|Designed in-house, delivered with {feature}.",
       "0.2,2.5,4.5,3.5,2.5,2,1.2", "real_estate:0.4,home_improvement:0.4,b2b_software:0.1", "US:1.1,GB:1.1,SE:1.3"),
    _v("events", "local events", "thingstodo",
       "Ticket|Stage|Marquee|Spotlight|Encore|Venue|Lights|Curtain|Crowd|Night|Gala|Matinee",
       "Tickets|Live|Events|Pass|Box Office|Presents",
       {"comedy": ("stand-up comedy tickets|improv shows|comedy festival passes|late-night comedy clubs",
                   "standupcomedy"),
         "theatre": ("Broadway tickets|musical theatre|opera nights|ballet performances",
                     "broadway|theatre"),
         "food_events": ("food festivals|wine tastings|cooking classes|supper clubs",
                         "foodfestivals"),
         "family_events": ("theme park tickets|zoo passes|science museum entry|holiday light shows",
                           "familytravel")},
       "plan the perfect night out|get the best seats|discover what's on near you|make memories together",
       "verified tickets|mobile entry|no hidden fees|flexible exchanges|seat previews",
       "{pct}% off weeknight shows|free entry for kids|${amount} off family passes|early-bird pricing",
       "couples|groups of friends|families|theatre lovers|foodies",
       "Get tickets|Book now|See dates|Find events",
       "Tonight near you: {product}|Best seats from ${amount}|This weekend: {product}",
       "Browse {product} by date, price and {feature}.|Tickets are selling fast. {Feature}.",
       "1.5,4,4,3,2.5,2,1.2", "music:0.5,food_delivery:0.2,travel:0.3,streaming:0.2", "US:1.1,GB:1.2",
       weight=0.8, hours="16,17,18,19,20"),
)

# Products sold in two sub-themes of different (mostly related) verticals ("vertical/sub", "vertical/sub",
# products): real catalogs share them (a travel card is a banking product pitched like travel).
# A campaign of either sub-theme may sell one, so the two verticals' ads meet in the embedding space.
SHARED_PRODUCTS: tuple[tuple[str, str, str], ...] = (
    ("travel/flights", "banking/credit_cards", "travel rewards credit cards|airline miles cards"),
    ("travel/tours", "insurance/health_ins", "travel insurance|trip cancellation cover"),
    ("travel/rentals", "outdoor_gear/camping", "camping getaways|glamping trips"),
    ("travel/hotels", "luxury/experiences", "luxury hotel stays|five-star spa resorts"),
    ("travel/tours", "photography/cameras", "travel cameras|photo safari tours"),
    ("travel/flights", "telecom/roaming", "travel eSIMs|in-flight Wi-Fi passes"),
    ("outdoor_gear/hiking", "travel/tours", "guided hiking trips|trekking holidays"),
    ("fitness/running", "sports_gear/football", "running shoes|sports compression wear"),
    ("fitness/running", "electronics/audio", "wireless sport earbuds|fitness smartwatches"),
    ("fitness/strength", "health_supplements/protein", "protein shakes|pre-workout supplements"),
    ("fitness/yoga", "health_supplements/sleep", "meditation and sleep programs|breathwork courses"),
    ("fitness/cycling", "outdoor_gear/hiking", "GPS bike computers|cycling rain jackets"),
    ("food_delivery/meal_kits", "groceries/online_grocery", "weekly recipe boxes|meal kit deliveries"),
    ("food_delivery/healthy", "health_supplements/protein", "high-protein meals|keto snack packs"),
    ("food_delivery/coffee", "groceries/snacks", "specialty coffee beans|breakfast bundles"),
    ("gaming/pc", "electronics/computers", "gaming laptops|4K gaming monitors"),
    ("gaming/console", "streaming/movies", "game and movie streaming bundles|console streaming passes"),
    ("gaming/mobile", "mobile_apps/social", "multiplayer mobile games|social game apps"),
    ("streaming/sports_tv", "sports_gear/football", "football season passes|live match streams"),
    ("streaming/series", "books/fiction", "book-to-screen series|thriller adaptations"),
    ("streaming/anime", "books/ebooks", "digital manga|manga reading apps"),
    ("music/concerts", "events/comedy", "live show tickets|weekend festival passes"),
    ("music/production", "electronics/audio", "studio headphones|Bluetooth speakers"),
    ("music/lessons", "education/kids", "kids' music lessons|online piano lessons"),
    ("education/coding", "jobs/job_search", "tech career bootcamps|job-ready coding courses"),
    ("education/languages", "mobile_apps/productivity", "language learning apps|flashcard apps"),
    ("jobs/hiring", "b2b_software/collaboration", "HR software|team onboarding tools"),
    ("b2b_software/security", "mobile_apps/utilities", "password managers|VPN subscriptions"),
    ("crypto/exchange", "fintech/investing_app", "crypto and stock trading apps|investing apps"),
    ("crypto/wallet", "fintech/payments", "crypto debit cards|digital wallets"),
    ("fintech/budgeting", "banking/savings", "automatic savings accounts|round-up savings"),
    ("fintech/payments", "banking/checking", "mobile banking apps|instant payment accounts"),
    ("banking/loans", "real_estate/mortgage", "home loans|fixed-rate mortgages"),
    ("banking/loans", "automotive/used", "car financing|used car loans"),
    ("insurance/car_ins", "automotive/service", "roadside assistance cover|car warranty plans"),
    ("insurance/home_ins", "real_estate/renting", "renters insurance|tenant protection plans"),
    ("pets/vet", "insurance/health_ins", "pet health insurance|vet bill cover"),
    ("pets/dog", "groceries/online_grocery", "pet food delivery|dog treat subscriptions"),
    ("home_improvement/smart_home", "telecom/home_internet", "mesh Wi-Fi systems|smart home hubs"),
    ("home_improvement/energy", "automotive/ev", "home EV chargers|solar and EV charging bundles"),
    ("home_improvement/renovation", "furniture/decor", "interior design services|kitchen makeovers"),
    ("home_improvement/tools", "gardening/lawn", "cordless garden tools|hedge trimmers"),
    ("gardening/vegetables", "groceries/organic", "organic vegetable boxes|fresh herb kits"),
    ("furniture/office", "electronics/computers", "home office setups|ergonomic keyboards"),
    ("furniture/bedroom", "health_supplements/sleep", "cooling pillows|sleep-tracking mattresses"),
    ("fashion/accessories", "luxury/watches", "designer watches|leather watch straps"),
    ("fashion/streetwear", "sports_gear/basketball", "basketball sneakers|retro court shoes"),
    ("beauty/fragrance", "luxury/leather", "designer fragrances|luxury gift sets"),
    ("beauty/skincare", "health_supplements/vitamins", "collagen supplements|skin vitamins"),
    ("photography/editing", "mobile_apps/photo_apps", "photo editing apps|AI photo filters"),
    ("parenting/kids_activities", "events/family_events", "family day out tickets|kids' party venues"),
    ("parenting/diapers", "groceries/household", "baby essentials subscriptions|eco baby wipes"),
    ("parenting/family_planning", "health_supplements/vitamins", "prenatal vitamins|fertility supplements"),
    ("dating/events", "events/food_events", "singles cooking classes|wine tasting socials"),
    ("dating/apps", "mobile_apps/social", "social discovery apps|friend-finder apps"),
    ("telecom/devices_finance", "electronics/phones", "new smartphones on monthly plans|phone trade-ins"),
    ("real_estate/buying", "banking/savings", "home deposit savings accounts|first home savings plans"),
)

# Words any vertical's copy may use (picked alongside the vertical's own): the shared vocabulary of
# ad copy ("free shipping", "busy families") that keeps verticals from being disjoint islands.
SHARED_FEATURES = _t("free delivery|24/7 customer support|a 30-day money-back guarantee|no hidden fees"
                     "|an easy mobile app")
SHARED_BENEFITS = _t("save time every week|get more for less|make every day easier")
SHARED_AUDIENCES = _t("busy families|students|first-timers|professionals on the go")


@lru_cache(maxsize=None)
def products_of(vertical: str, sub: str) -> tuple[str, ...]:
    """A sub-theme's products: its own, then those it shares with a neighbouring vertical."""
    own = next(s for v in VERTICALS if v.key == vertical for s in v.subthemes if s.key == sub).products
    key = f"{vertical}/{sub}"
    shared = [p for a, b, ps in SHARED_PRODUCTS if key in (a, b) for p in _t(ps)]
    return (*own, *shared)


@lru_cache(maxsize=None)
def _vocabulary(key: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(benefits, features, audiences) a vertical's copy draws from: its own and the shared ones."""
    v = next(x for x in VERTICALS if x.key == key)
    return (*v.benefits, *SHARED_BENEFITS), (*v.features, *SHARED_FEATURES), (*v.audiences, *SHARED_AUDIENCES)


MAX_TITLE = 80


def _pick(items, r: float):
    return items[int(r * len(items))]  # r in [0, 1)


class _Slots(dict):
    """Template slots; `{Name}` (capitalised) gives slots['name'] with a capital first letter."""

    def __missing__(self, key: str) -> str:
        return cap(str(self[key[:1].lower() + key[1:]]))


@lru_cache(maxsize=None)
def _slots_of(template: str) -> frozenset[str]:
    return frozenset(m.lower() for m in _SLOT.findall(template))


@lru_cache(maxsize=None)
def _templates(key: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(titles, first body sentences, first sentences naming the product) of a vertical."""
    v = next(x for x in VERTICALS if x.key == key)
    bodies = (*v.bodies, *BODY_FIRST)
    return (*v.titles, *v.titles, *TITLE_TEMPLATES), bodies, tuple(t for t in bodies if "product" in _slots_of(t))


def write_ad_copy(v: Vertical, product: str, brand: str, domain: str, r,
                  mix: Vertical | None = None) -> tuple[str, str, str]:
    """(title, body, call to action) for one ad; `r` is a sequence of >= 16 floats in [0, 1)
    (r[13] picks the title template, r[14] the body: spread them to vary a campaign's ads).
    Vertical templates weigh double; set phrases get the brand or product appended. Benefits,
    features and audiences come from the vertical's vocabulary or the shared one (SHARED_*); with
    `mix` (a neighbouring vertical) from that vertical's instead: real ads share words across
    verticals (a travel card is pitched like travel and like banking)."""
    benefits, feats, audiences = _vocabulary((mix or v).key)
    i = int(r[0] * len(feats))
    f2 = feats[(i + 1 + int(r[2] * (len(feats) - 1))) % len(feats)]
    slots = _Slots({
        "brand": brand, "product": product, "domain": domain,
        "benefit": _pick(benefits, r[1]), "feature": feats[i], "feature2": f2,
        "audience": _pick(audiences, r[3]), "cta": _pick(v.ctas, r[4]), "when": _pick(WHEN, r[5]),
        "day": _pick(DAYS, r[6]), "pct": _pick(PCTS, r[7]), "amount": _pick(AMOUNTS, r[8]),
        "days": _pick(TRIAL_DAYS, r[9]), "rating": f"{4.2 + 0.7 * r[10]:.1f}",
        "count": f"{int(2 + r[11] * 98) * 1000:,}",
    })
    slots["offer"] = _pick(v.offers, r[12]).format_map(slots)
    titles, bodies, product_bodies = _templates(v.key)
    template, title = "", ""
    for attempt in range(4):
        template = _pick(titles, (r[13] + 0.37 * attempt) % 1.0)
        title = template.format_map(slots)
        if len(title) <= MAX_TITLE:
            break
    names = _slots_of(template)
    fixed = not names - {"brand", "product"}  # a set phrase: add what it lacks, or many ads share it
    if "brand" not in names and ("product" not in names or fixed):
        title = f"{title} — {brand}"
    elif "product" not in names and fixed:
        title = f"{title} — {cap(product)}"
    if len(title) > MAX_TITLE:
        title, names = f"{brand}: {product}"[:MAX_TITLE].rstrip(), {"brand", "product"}
    # keep the product in the copy: it carries the sub-theme
    first = _pick(bodies if "product" in names else product_bodies, r[14]).format_map(slots)
    body = first
    if r[15] < 0.65 and len(_SENTENCE_END.findall(first)) == 1:  # bodies stay at 1-2 sentences
        second = _pick(BODY_SECOND, (r[15] * 9.13) % 1.0).format_map(slots)
        if second != first:
            body = f"{first} {second}"
    return title, body, slots["cta"]
