"""A synthetic catalog, interaction log and impression log with a known ground truth.

Why it exists: the offline demo, the tests and the off-policy A/B code need data whose structure is
known. Real logs never tell you the users' true tastes or the logging policy's probabilities; here
both are recorded, so an estimator can be checked against the value it should find.

What is in it
-------------
* **Items** belong to one of ten categories (sci-fi books, cookbooks, running gear, jazz albums,
  travel guides, kids' toys, gardening, personal finance, video games, crime fiction), each with six
  finer *topics*. Titles and descriptions are composed from per-category and per-topic vocabularies
  (adjectives, nouns, makers, topic hooks, templates), so text similarity follows category and topic
  and a text encoder has something real to learn. Some items form a *series* (``..., Book 2``).
  Roughly 30% of items are created during the simulated period, the rest before it.
  Popularity is Zipf-distributed over a random rank within each category.
* **Users** have two latent taste anchors, each a Dirichlet mixture over categories times a
  Dirichlet mixture over the topics of each category. A user's taste at time ``t`` is
  ``(1 - lam) * P0 + lam * P1`` with ``lam = drift_u * progress_u(t)`` growing linearly from 0 at the
  user's first interaction to ``drift_u`` at the last: tastes DRIFT.
* **Interactions** come in sessions. A session starts with a topic drawn from the current taste;
  later steps stay on the previous topic, jump to the next volume of the series just seen, or draw
  a fresh topic. Items are drawn by popularity within the topic among items that already exist;
  a user rarely sees the same item twice. Each user has at least 3 interactions, with a long-tailed
  (log-normal) count. ``event`` is ``"view"`` (``weight`` 1.0) or ``"purchase"`` (``weight`` 3.0);
  purchases are likelier for items the user truly likes.
* **Impressions** are logged by a known stochastic policy (see "Logging policy and propensity").

Ground truth (``GroundTruth``, returned by :func:`generate_with_truth`)
----------------------------------------------------------------------
``affinity(u, i, t) = log(n_topics * max(P_t(u)[topic(i)], 1e-4)) + quality(i)``

Click model (position-based): ``P(click | u, i, position k, t) = position_bias[k] *
sigmoid(affinity(u, i, t) + click_bias)``; see :meth:`GroundTruth.click_probability`.

Logging policy and propensity
-----------------------------
The logging policy scores every item that exists at request time with a *noisy* estimate of the
user's taste, ``s(u, i, t) = log(n_topics * max(P_t(u)[topic(i)], 1e-4)) + noise[u, topic(i)] +
logged_quality(i)``, and fills the slate by Plackett-Luce sampling without replacement from
``softmax(s / temperature)`` over those items. Positions are 0-based.

The recorded ``propensity`` of the item at position ``k`` is its **Plackett-Luce conditional
probability**: the softmax probability of that item among the available items not already placed at
positions ``0..k-1`` of the same request. Two consequences that make IPS exact (unbiased):

* at position 0 it is the marginal probability of a single-slot request, so
  ``mean(clicked * pi_e(item | u, t) / propensity)`` over position-0 rows is an unbiased estimate of a
  single-slot target policy ``pi_e``'s click rate in the top slot (``position_bias[0]`` applies);
* at position ``k``, the product of ``pi_e(a_j | earlier) / propensity_j`` over ``j = 0..k`` is an
  unbiased weight for the clicks at position ``k`` of any target policy that also fills slates
  sequentially (the click at ``k`` depends only on the item at ``k``, by the click model).

:meth:`GroundTruth.logging_probability` recomputes the single-slot probabilities, and
:meth:`GroundTruth.click_probability` (or ``click_probability_matrix`` over a candidate list, with
``available`` and ``logging_probability_matrix``) gives the true value of any target policy, e.g.
``(pi_e * truth.click_probability_matrix(users, ts, item_ids)).sum(axis=1).mean()``.
Temperatures below ~0.1 are valid but slower (slates need many rejection rounds).

Scale
-----
Everything is vectorised numpy plus polars string concatenation (no per-row Python), and every
random stream is seeded, so the same seed gives identical frames. 10M interactions (500k users,
250k items, 5M impressions) take about 50 s and 2.6 GB peak RSS on two shared cores (see
``benchmarks/bench_synthetic.py``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.data.dataset import Dataset
from recsys.errors import ConfigError, DataError

if TYPE_CHECKING:
    import polars as pl

TEXT_TEMPLATE = "{title} | {category} | {description}"
TASTE_FLOOR = 1e-4
DAY = 86_400

# ----------------------------------------------------------------------------------------------------
# Vocabulary. Every description template carries the category's `signature` (directly or through
# `extras`), and topic nouns and hooks are specific to their topic: that is what makes text
# similarity reflect category and topic.
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    """A fine-grained interest inside a category: its label, title nouns and description hooks."""

    label: str
    nouns: tuple[str, ...]
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class Category:
    """One category's vocabulary and templates (fields: adj, adjl, noun, noun2, topic, hook, maker, extra)."""

    name: str
    signature: str
    adjs: tuple[str, ...]
    makers: tuple[str, ...]
    extras: tuple[str, ...]
    titles: tuple[str, ...]
    descriptions: tuple[str, ...]
    series_sep: str
    topics: tuple[Topic, ...]


def _topic(label: str, nouns: str, hooks: str) -> Topic:
    return Topic(label, tuple(nouns.split("|")), tuple(hooks.split("|")))


def _category(
    name: str, signature: str, adjs: str, makers: str, extras: str, titles: str, descriptions: str,
    series_sep: str, topics: tuple[Topic, ...],
) -> Category:
    """A `Category` from ``|``-separated word lists (compact to read and to edit)."""
    lists = (tuple(v.split("|")) for v in (adjs, makers, extras, titles, descriptions))
    return Category(name, signature, *lists, series_sep, topics)


CATEGORIES: tuple[Category, ...] = (
    _category(
        name="sci-fi books",
        signature="science fiction",
        adjs="Silent|Broken|Last|Hollow|Crimson|Distant|Burning|Frozen|Infinite|Forgotten|Shattered|Eternal",
        makers="Ada Kessler|Rafael Okoye|Mira Solberg|Theo Vance|Yuki Tanaka-Hale|Lena Marchetti|"
               "Samuel Achebe|Ingrid Novak|Dev Raman|Clara Whitfield",
        extras="A gripping science fiction page-turner.|Hard science fiction with big ideas.|"
               "Perfect for fans of classic science fiction.|An award-winning science fiction debut.|"
               "Thoughtful science fiction about humanity's future.",
        titles="The {adj} {noun}|{noun} of the {noun2}|{adj} {noun}|Beyond the {adj} {noun2}",
        descriptions="{maker}'s {topic} novel follows {hook}. {extra}|"
                     "This {topic} novel by {maker} tells the story of {hook}. {extra}|"
                     "Science fiction from {maker}: {hook}. {extra}",
        series_sep=", Book ",
        topics=(
            _topic(
                "space opera",
                "Starship|Armada|Nebula|Empire|Fleet|Dreadnought|Star Throne|Outer Rim",
                "a war between galactic empires|a smuggler crew hunted across the outer rim|"
                "the last admiral of a fallen star fleet|a mutiny aboard a generation starship|"
                "a princess who must unite rival star systems",
            ),
            _topic(
                "cyberpunk",
                "Neon|Circuit|Megacity|Implant|Firewall|Ghost Code|Datastream|Chrome",
                "a hacker who steals memories from corporate servers|"
                "a street samurai with illegal neural implants|a megacity ruled by rival corporations|"
                "an AI hiding inside the city's power grid|"
                "a courier carrying stolen data through neon streets",
            ),
            _topic(
                "time travel",
                "Paradox|Timeline|Chronicle|Clockwork|Loop|Yesterday|Hourglass|Epoch",
                "a scientist trapped in a repeating day|a historian who rewrites the past by accident|"
                "two lovers separated by centuries|a paradox that erases a city from history|"
                "an agent policing forbidden timelines",
            ),
            _topic(
                "first contact",
                "Signal|Visitor|Beacon|Envoy|Message|Arrival|Contact|Stranger",
                "humanity's first conversation with an alien mind|a radio signal from a dying star|"
                "a linguist decoding an alien language|a mysterious ship hovering above the ocean|"
                "the first human embassy on an alien world",
            ),
            _topic(
                "dystopian",
                "Ration|Wall|Ministry|Census|Curfew|Ashes|Silence|Republic",
                "a rebel hiding in a surveillance state|a city rationing water after the collapse|"
                "a teenager who refuses the state's lottery|"
                "a ministry that rewrites every citizen's memories|"
                "survivors rebuilding after climate collapse",
            ),
            _topic(
                "artificial intelligence",
                "Machine|Android|Algorithm|Mind|Protocol|Synthetic|Automaton|Singularity",
                "an android who wants to become human|a rogue algorithm that predicts every election|"
                "a companion robot with a secret|the first machine mind to claim its rights|"
                "engineers racing to contain a runaway AI",
            ),
        ),
    ),
    _category(
        name="cookbooks",
        signature="recipes",
        adjs="Simple|Everyday|Modern|Rustic|Weeknight|Seasonal|Homemade|Essential|Fresh|Cozy|Fearless|"
             "Complete",
        makers="Marco Bellini|Nadia Hussain|Julia Fenwick|Kenji Mori|Rosa Delgado|Tom Ashby|Priya Natarajan|"
               "Hugo Lefevre|Mei Lin|Sophie Brandt",
        extras="Step-by-step photos for every dish.|Includes shopping lists and prep tips.|"
               "Perfect for busy home cooks.|Tested in a real home kitchen.|"
               "Ingredients you can find at any grocery store.",
        titles="{adj} {noun}|The {adj} {noun} Cookbook|{noun}: {adj} Recipes|{adj} {noun} at Home",
        descriptions="{maker} shares over 100 {topic} recipes for {hook}. {extra}|"
                     "This {topic} cookbook collects {adjl} recipes for {hook}, from {maker}. {extra}",
        series_sep=", Volume ",
        topics=(
            _topic(
                "Italian",
                "Pasta|Risotto|Trattoria|Pizza|Antipasti|Gnocchi|Focaccia|Nonna's Kitchen",
                "fresh pasta and slow-simmered ragu|wood-fired pizza and crisp focaccia|"
                "creamy risotto and classic Italian sauces|Sunday dinners from a Tuscan kitchen|"
                "handmade gnocchi and simple antipasti",
            ),
            _topic(
                "baking",
                "Sourdough|Bread|Pastry|Cakes|Cookies|Layer Cake|Croissant|Bakery",
                "crusty sourdough loaves and artisan bread|buttery pastry and flaky croissants|"
                "celebration cakes and frosting|cookies, brownies and bake sale treats|"
                "pies and tarts with seasonal fruit",
            ),
            _topic(
                "vegan",
                "Plant Kitchen|Greens|Lentils|Tofu|Grain Bowls|Plant Power|Chickpeas|Green Plate",
                "hearty plant-based meals without meat or dairy|protein-packed lentil and chickpea dishes|"
                "colorful vegan grain bowls|dairy-free desserts and plant milks|"
                "vegan comfort food the whole family loves",
            ),
            _topic(
                "barbecue",
                "Barbecue|Smokehouse|Grill|Brisket|Fire|Ribs|Charcoal|Skewers",
                "slow-smoked brisket and pulled pork|charcoal grilling and backyard cookouts|"
                "sticky ribs and homemade barbecue sauces|flame-grilled vegetables and skewers|"
                "low and slow barbecue techniques",
            ),
            _topic(
                "Asian noodle",
                "Noodles|Ramen|Dumplings|Wok|Stir-Fry|Bao|Pho|Curry",
                "rich ramen broths and hand-pulled noodles|crispy dumplings and steamed bao|"
                "fast wok stir-fries|fragrant Thai curries and pho|street food from Tokyo to Bangkok",
            ),
            _topic(
                "weeknight",
                "Weeknight Dinners|One Pot|Sheet Pan|Meal Prep|Pantry|Skillet|Quick Bites|Lunchbox",
                "dinners on the table in thirty minutes|one-pan meals with little cleanup|"
                "meal prep for a busy work week|five-ingredient pantry suppers|"
                "healthy lunches to pack for work and school",
            ),
        ),
    ),
    _category(
        name="running gear",
        signature="running",
        adjs="Ultra|Swift|Aero|Pro|Lite|Velocity|Endurance|Storm|Apex|Tempo|Stride|Pulse",
        makers="Stridewell|NorthPeak|Kinetic Labs|Arcadia Sport|Fleetfoot|Summit Run|Pacer Co.|"
               "Vantage Athletics|Redline|Tundra Gear",
        extras="Lightweight and breathable.|Tested by elite athletes.|"
               "Available in multiple colors and sizes.|Backed by a two-year warranty.|"
               "Reflective details for low light.",
        titles="{maker} {adj} {noun}|{adj} {noun}|{maker} {noun} {adj}|{adj} {noun} by {maker}",
        descriptions="The {maker} {noun} is built for {hook}. {extra} Running gear for {topic} runners.|"
                     "Running gear for {topic} runners: the {adj} {noun} handles {hook}. {extra}",
        series_sep=" v",
        topics=(
            _topic(
                "trail",
                "Trail Shoe|Gaiter|Trail Runner|Grip Shoe|Mountain Shoe|Trail Vest|Rock Plate Shoe|Headlamp",
                "rocky single-track and muddy descents|grip on wet roots and loose gravel|"
                "long mountain races and ultra distances|technical terrain with sharp rocks|"
                "early-morning runs on dark forest trails",
            ),
            _topic(
                "road",
                "Racing Flat|Carbon Racer|Road Shoe|Marathon Shoe|Tempo Trainer|Daily Trainer|Race Singlet|"
                "Split Shorts",
                "chasing a marathon personal best|fast tempo runs on pavement|race day with a carbon plate|"
                "daily road miles with soft cushioning|5K and 10K road races",
            ),
            _topic(
                "cold-weather",
                "Thermal Tights|Running Jacket|Wind Shell|Beanie|Running Gloves|Base Layer|Rain Jacket|"
                "Neck Gaiter",
                "winter runs below freezing|staying dry in cold rain|windy coastal runs|"
                "layering on dark winter mornings|visibility on snowy evenings",
            ),
            _topic(
                "long-distance",
                "Hydration Vest|Soft Flask|Water Belt|Bottle Pack|Electrolyte Mix|Energy Gel|Hydration Pack|"
                "Race Belt",
                "carrying water on long runs|fuel and electrolytes for marathon training|"
                "hands-free hydration|hot summer long runs|energy gels during ultras",
            ),
            _topic(
                "data-driven",
                "GPS Watch|Heart Rate Strap|Foot Pod|Running Watch|Training Watch|Sport Earbuds|Armband|"
                "Pace Tracker",
                "tracking pace, distance and heart rate|interval workouts with structured training plans|"
                "accurate GPS in cities and forests|music and coaching on every run|"
                "battery life that lasts a whole ultramarathon",
            ),
            _topic(
                "recovery-focused",
                "Foam Roller|Compression Socks|Recovery Slide|Massage Gun|Recovery Sandal|"
                "Compression Sleeve|Stretch Strap|Ice Wrap",
                "sore legs after a long race|recovery days between hard workouts|"
                "tight calves and shin splints|post-run stretching and mobility|"
                "faster muscle recovery after the marathon",
            ),
        ),
    ),
    _category(
        name="jazz albums",
        signature="jazz",
        adjs="Blue|Midnight|Late Night|Smoky|Velvet|Golden|Moonlit|Autumn|Uptown|Quiet|Electric|Sunset",
        makers="The Miles Carter Quartet|Ella Brooks|Dizzy Monroe Trio|Nina Hart|Coleman Reed Sextet|"
               "Bill Avery|The Harlem Night Orchestra|Sonny Blake|Lucia Ferrer|Art Delaney Quintet",
        extras="Recorded live in one take.|Remastered from the original tapes.|A classic of the jazz canon.|"
               "Essential listening for jazz fans.|Features extended solos and bonus tracks.",
        titles="{adj} {noun}|{noun} Sessions|Live at the {adj} {noun}|{noun} and {noun2}",
        descriptions="{maker} plays {topic} jazz on this {adjl} album, featuring {hook}. {extra}|"
                     "A {topic} jazz record from {maker} with {hook}. {extra}",
        series_sep=", Vol. ",
        topics=(
            _topic(
                "bebop",
                "Bird Song|Fast Changes|Minton's|Bop|Blue Note|Horn|52nd Street|Riffs",
                "blazing saxophone solos over fast chord changes|a hard-driving rhythm section|"
                "trumpet and alto sax trading choruses|bebop standards at breakneck tempo|"
                "late-night jam sessions in New York clubs",
            ),
            _topic(
                "cool",
                "Cool Breeze|West Coast|Mellow|Twilight|Calm Waters|Pacific|Mood|Soft Light",
                "relaxed West Coast arrangements|muted trumpet and soft brushes|"
                "understated melodies and gentle swing|lyrical piano and airy saxophone|"
                "a laid-back mood for quiet evenings",
            ),
            _topic(
                "fusion",
                "Voltage|Synth|Groove|Orbit|Circuit Funk|Fender|Spectrum|Amplifier",
                "electric guitar and funky basslines|jazz-rock grooves and synthesizers|"
                "complex time signatures and electric piano|a fusion band at full volume|"
                "funky drums and wah-wah guitar",
            ),
            _topic(
                "vocal",
                "Ballads|Songbook|Serenade|Torch Song|Lullaby|Love Songs|Standards|Velvet Voice",
                "a warm voice singing timeless standards|tender ballads with piano accompaniment|"
                "the great American songbook|scat singing and swinging vocals|romantic torch songs",
            ),
            _topic(
                "big band",
                "Swing|Big Band|Ballroom|Jump|Brass|Jitterbug|Orchestra|Stomp",
                "a roaring big band horn section|swing dance classics|"
                "ballroom arrangements from the swing era|shouting brass and clarinet solos|"
                "jump blues for the dance floor",
            ),
            _topic(
                "Latin",
                "Bossa Nova|Samba|Havana|Mambo|Rio|Conga|Clave|Salsa",
                "bossa nova rhythms and nylon-string guitar|Afro-Cuban percussion and congas|"
                "samba grooves from Rio|mambo horns and Latin rhythms|sunny Brazilian melodies",
            ),
        ),
    ),
    _category(
        name="travel guides",
        signature="travel guide",
        adjs="Essential|Ultimate|Pocket|Insider's|Complete|Budget|Family|Slow|Hidden|Weekend|Local|Adventure",
        makers="Wanderlust Press|Compass Guides|Atlas & Co.|Nomad Books|Backroads Publishing|"
               "Globe Trekker Guides|Horizon Travel|Passport Press",
        extras="Maps, itineraries and insider tips.|Updated for this year's travel season.|"
               "Written by local experts.|Includes suggested day trips.|"
               "Budget and luxury options side by side.",
        titles="{adj} {noun}|{noun}: The {adj} Guide|The {adj} Guide to {noun}|{noun} in a Week",
        descriptions="The {adjl} travel guide to {noun} from {maker}: {hook}. {extra}|"
                     "{maker}'s travel guide for {topic} trips, covering {hook}. {extra}",
        series_sep=", Edition ",
        topics=(
            _topic(
                "Japan",
                "Tokyo|Kyoto|Osaka|Hokkaido|Okinawa|Japan|Nara|Hiroshima",
                "temples, ramen bars and bullet trains|cherry blossom season and traditional inns|"
                "neon nights in Tokyo and quiet Kyoto shrines|hot springs and mountain villages|"
                "rail passes and day trips",
            ),
            _topic(
                "Italy",
                "Rome|Florence|Venice|Tuscany|Sicily|Amalfi Coast|Naples|Milan",
                "ancient ruins, piazzas and gelato|Renaissance art and hill towns|"
                "wine country and cooking classes|coastal villages and ferry hops|"
                "the best trattorias off the tourist trail",
            ),
            _topic(
                "Nordic",
                "Norway|Iceland|Stockholm|Copenhagen|Lapland|Fjords|Helsinki|Faroe Islands",
                "fjord cruises and northern lights|glacier hikes and black sand beaches|"
                "design museums and cozy cafes|midnight sun road trips|saunas, islands and Arctic adventures",
            ),
            _topic(
                "South America",
                "Peru|Patagonia|Buenos Aires|Rio de Janeiro|Colombia|Chile|Machu Picchu|Bolivia",
                "trekking the Inca Trail to Machu Picchu|glaciers and wild hikes in Patagonia|"
                "tango nights and steak houses|beaches, carnival and samba|colonial towns and coffee farms",
            ),
            _topic(
                "Southeast Asia",
                "Thailand|Vietnam|Bali|Cambodia|Laos|Singapore|Philippines|Malaysia",
                "island hopping and beach huts|street food markets and night buses|"
                "ancient temples at Angkor|backpacking on a shoestring|jungle treks and rice terraces",
            ),
            _topic(
                "national park",
                "Yosemite|Yellowstone|Grand Canyon|Zion|Rocky Mountains|Glacier Park|Route 66|Pacific Coast",
                "campgrounds, trailheads and scenic drives|wildlife spotting and geysers|"
                "classic American road trips|family hikes and ranger programs|"
                "canyon views and desert sunsets",
            ),
        ),
    ),
    _category(
        name="kids' toys",
        signature="kids",
        adjs="Super|Mega|Tiny|Magic|Happy|Rainbow|Jumbo|Wonder|Little|Bright|Giggly|Deluxe",
        makers="Playful Pine|BrightBlocks|Tinker Town|Wonder Kids Co.|Huggable|Little Explorers|Funbox|"
               "Mighty Mini",
        extras="Recommended for ages 3 and up.|Made from safe, non-toxic materials.|No batteries required.|"
               "A great birthday gift.|Encourages creativity and imagination.",
        titles="{adj} {noun}|{maker} {adj} {noun}|{adj} {noun} Bundle|My First {noun}",
        descriptions="{maker}'s {topic} toy for kids who love {hook}. {extra}|"
                     "Kids will enjoy {hook} with this {adjl} {noun} from {maker}. {extra}",
        series_sep=" Series ",
        topics=(
            _topic(
                "building",
                "Blocks|Castle|Bricks|Tower|Construction Kit|Magnetic Tiles|Marble Run|Builder Kit",
                "stacking colorful bricks into towers|building castles, bridges and cities|"
                "magnetic tiles that snap together|marble runs with twisty tracks|"
                "open-ended construction play",
            ),
            _topic(
                "plush",
                "Teddy Bear|Bunny|Dragon Plush|Unicorn|Puppy|Panda|Sloth|Kitten",
                "cuddly soft friends at bedtime|a huggable plush with floppy ears|"
                "snuggly companions for naps|stuffed animals with embroidered eyes|"
                "a plush buddy for long car rides",
            ),
            _topic(
                "STEM",
                "Robot|Science Kit|Circuit Kit|Telescope|Microscope|Coding Robot|Volcano Kit|Crystal Lab",
                "coding a robot to follow lines|simple circuits and electronics experiments|"
                "exploring the night sky|kitchen chemistry experiments|growing crystals and learning science",
            ),
            _topic(
                "puzzle",
                "Jigsaw Puzzle|Floor Puzzle|Brain Teaser|Puzzle Cube|Shape Sorter|Maze|Logic Puzzle|Tangram",
                "100-piece jigsaw puzzles with animals|shape sorting and problem solving|"
                "brain teasers for clever minds|giant floor puzzles of world maps|"
                "logic challenges with increasing difficulty",
            ),
            _topic(
                "outdoor",
                "Bubble Machine|Kite|Water Blaster|Scooter|Sandbox Kit|Swing|Balance Bike|Sidewalk Chalk",
                "backyard adventures in the sunshine|flying kites at the park|"
                "water fights on hot summer days|learning to ride and balance|digging in the sandbox",
            ),
            _topic(
                "pretend play",
                "Play Kitchen|Doctor Kit|Tea Party Kit|Tool Bench|Dollhouse|Toy Shop|Costume Box|Fire Truck",
                "cooking pretend meals for the family|playing doctor with a toy stethoscope|"
                "tea parties with stuffed friends|fixing things with a toy tool bench|"
                "role play and storytelling",
            ),
        ),
    ),
    _category(
        name="gardening",
        signature="garden",
        adjs="Green|Thriving|Backyard|Organic|Abundant|Urban|Cottage|Wild|Easy|Compact|Year-Round|Bountiful",
        makers="Greenthumb Press|Evelyn Marsh|Rootstock Tools|Hollyhock Books|Arthur Penrose|Bloom & Sprout|"
               "Meadowlark Co.|Fern Whitaker",
        extras="Suitable for beginners and experienced gardeners.|Works in any climate zone.|"
               "Illustrated with seasonal planting calendars.|Sustainable and chemical-free.|"
               "Great for balconies and raised beds.",
        titles="The {adj} {noun}|{adj} {noun} Handbook|{noun} for Every Season|{maker} {noun}",
        descriptions="{maker} on {topic} for your {adjl} garden: {hook}. {extra}|"
                     "Help your garden thrive with {topic} know-how from {maker}, covering {hook}. {extra}",
        series_sep=", Volume ",
        topics=(
            _topic(
                "vegetable growing",
                "Tomatoes|Vegetable Patch|Kitchen Plot|Raised Bed|Harvest|Salad Greens|Potatoes|Herb Patch",
                "growing juicy tomatoes and peppers|planning a raised-bed vegetable plot|"
                "a summer harvest of beans and zucchini|fresh herbs on the windowsill|"
                "companion planting for healthy crops",
            ),
            _topic(
                "houseplant care",
                "Houseplants|Monstera|Indoor Jungle|Fern|Ficus|Pothos|Plant Shelf|Terrarium",
                "keeping houseplants alive in low light|repotting a leafy monstera|"
                "misting ferns and humidity tips|building a glass terrarium|"
                "an indoor jungle in a small apartment",
            ),
            _topic(
                "flower beds",
                "Roses|Tulips|Peonies|Dahlias|Cut Flowers|Wildflowers|Flower Border|Lavender",
                "planting spring bulbs in autumn|pruning climbing roses|a cutting patch full of dahlias|"
                "wildflower meadows for bees|colorful borders from spring to fall",
            ),
            _topic(
                "tool",
                "Pruning Shears|Trowel|Hose|Wheelbarrow|Rake|Hedge Trimmer|Watering Can|Spade",
                "sharp pruning and clean cuts|digging, weeding and planting|"
                "watering beds without wasting water|hauling soil and mulch|tidy hedges and lawn edges",
            ),
            _topic(
                "composting",
                "Compost|Soil|Worm Bin|Mulch|Leaf Mold|Compost Bin|Potting Mix|Humus",
                "turning kitchen scraps into rich compost|healthy soil full of earthworms|"
                "worm composting on a balcony|mulching to keep weeds down|"
                "feeding plants without chemical fertilizer",
            ),
            _topic(
                "succulent",
                "Succulents|Cactus|Aloe|Desert Bed|Agave|Echeveria|Rockery|Jade Plant",
                "drought-tolerant succulents and cacti|propagating echeveria from leaves|"
                "a low-water desert bed|rockeries in full sun|caring for cacti through winter",
            ),
        ),
    ),
    _category(
        name="personal finance",
        signature="money",
        adjs="Smart|Simple|Wealthy|Frugal|Fearless|Rich|Debt-Free|Early|Confident|Savvy|Mindful|Practical",
        makers="Grace Holloway|Marcus Bell|Dr. Alan Price|Sofia Ramirez|Ben Carter|Hannah Lowe|Victor Osei|"
               "Naomi Sterling",
        extras="Includes worksheets and checklists.|No jargon, just clear advice.|"
               "A bestseller for first-time savers.|Real stories from real families.|"
               "Updated with current tax rules.",
        titles="The {adj} {noun}|{adj} {noun}|{noun} Made Simple|Your {adj} {noun}",
        descriptions="{maker} explains {topic} in plain language: {hook}. {extra} "
                     "Take control of your money.|"
                     "A practical money book on {topic} by {maker}, covering {hook}. {extra}",
        series_sep=", Book ",
        topics=(
            _topic(
                "investing",
                "Index Funds|Portfolio|Stock Market|Compounding|Dividends|Investor|Bull Market|ETF",
                "low-cost index funds and diversification|building a dividend portfolio|"
                "understanding stocks and bonds|the power of compound interest|"
                "investing through market crashes",
            ),
            _topic(
                "budgeting",
                "Budget|Spending Plan|Envelope|Paycheck|Savings|Cash Flow|Frugality|Money Diary",
                "a zero-based monthly budget|tracking every dollar you spend|saving an emergency fund|"
                "cutting grocery bills and subscriptions|living below your means",
            ),
            _topic(
                "retirement planning",
                "Retirement|Pension|Nest Egg|401(k)|Golden Years|Early Retirement|Annuity|Social Security",
                "saving for retirement in your thirties|retiring early with financial independence|"
                "pensions, annuities and withdrawal rates|planning income for the golden years|"
                "catching up on retirement savings after fifty",
            ),
            _topic(
                "real estate",
                "Real Estate|Mortgage|Landlord|Rental Property|First Home|Property Ladder|Down Payment|"
                "Home Equity",
                "buying your first home|choosing the right mortgage|"
                "becoming a landlord with rental properties|saving for a down payment|"
                "refinancing and home equity",
            ),
            _topic(
                "getting out of debt",
                "Debt Snowball|Credit Score|Zero Debt|Loans|Credit Card|Student Loan|Payoff Plan|Fresh Start",
                "paying off credit card debt|the debt snowball method|repairing a bad credit score|"
                "getting rid of student loans|negotiating with lenders",
            ),
            _topic(
                "taxes",
                "Taxes|Tax Return|Deductions|Tax Season|Audit|Side Hustle Taxes|Tax Code|Refund",
                "filing your own tax return|legal deductions most people miss|"
                "taxes for freelancers and side hustles|preparing for tax season|"
                "keeping records in case of an audit",
            ),
        ),
    ),
    _category(
        name="video games",
        signature="video game",
        adjs="Dark|Legendary|Lost|Savage|Hyper|Fallen|Iron|Shadow|Royal|Turbo|Cursed|Mighty",
        makers="Pixelforge Studios|Red Comet Games|Blackstone Interactive|Moonbyte|Crimson Owl|"
               "Ironclad Entertainment|Tiny Titan Games|Nova Arcade",
        extras="Single-player campaign and online multiplayer.|Available on PC and consoles.|"
               "Over 40 hours of gameplay.|Includes a photo mode and achievements.|"
               "Supports co-op with friends.",
        titles="{adj} {noun}|{noun} of {noun2}|{adj} {noun}: Remastered|Rise of the {adj} {noun}",
        descriptions="This {topic} video game by {maker} features {hook}. {extra}|"
                     "{maker} presents {adjl} {topic} action in a video game about {hook}. {extra}",
        series_sep=" ",
        topics=(
            _topic(
                "role-playing",
                "Dragon|Kingdom|Quest|Dungeon|Sword|Sorcerer|Realm|Legend",
                "an open world full of dragons and side quests|deep character builds and skill trees|"
                "a party of heroes on an epic quest|turn-based battles in a fantasy kingdom|"
                "dungeon crawling for legendary loot",
            ),
            _topic(
                "strategy",
                "Empire|Conquest|Colony|Civilization|Warlord|Siege|Dominion|Frontier",
                "building an empire across centuries|tactical battles on a hex grid|"
                "managing a colony on a hostile planet|diplomacy, trade and conquest|"
                "real-time strategy with huge armies",
            ),
            _topic(
                "racing",
                "Speedway|Drift|Rally|Grand Prix|Turbo Cup|Street Racer|Motorsport|Nitro",
                "hundreds of licensed cars and tracks|drifting through city streets at night|"
                "off-road rally stages in the rain|Formula racing with realistic physics|"
                "arcade racing with nitro boosts",
            ),
            _topic(
                "platformer",
                "Jump|Pixel|Adventure|Castle|Island|Star Hopper|Platform|Sky Hopper",
                "precise jumps through colorful levels|collecting stars and secret coins|"
                "a pixel-art hero saving the world|challenging boss fights and hidden worlds|"
                "co-op platforming for the whole family",
            ),
            _topic(
                "survival horror",
                "Asylum|Nightmare|Outbreak|Haunting|Dead Zone|Whisper|Fog|Crypt",
                "surviving a zombie outbreak|exploring a haunted asylum|scarce ammo and terrifying monsters|"
                "psychological horror in a foggy town|escaping creatures in the dark",
            ),
            _topic(
                "sports",
                "Football|Basketball|Soccer Manager|Golf Tour|Tennis|Hockey|Baseball|Skateboard",
                "managing a soccer club to the championship|realistic basketball with online leagues|"
                "career mode for a rising tennis star|skateboarding tricks in open parks|"
                "golf courses from around the world",
            ),
        ),
    ),
    _category(
        name="crime fiction",
        signature="crime",
        adjs="Deadly|Cold|Silent|Dark|Bitter|Hidden|Final|Crooked|Quiet|Missing|Perfect|Last",
        makers="Harriet Quinn|J. D. Mercer|Agatha Crane|Liam Walsh|Beatrice Moreau|Colin Strand|Ruth Abara|"
               "Nils Ekdahl",
        extras="A twisty page-turner you can't put down.|The first in a bestselling detective series.|"
               "Perfect for fans of classic whodunits.|Dark, atmospheric and gripping.|"
               "An Edgar Award finalist.",
        titles="The {adj} {noun}|{adj} {noun}|Death and the {noun}|The {noun} Affair",
        descriptions="{maker}'s {topic} crime novel follows {hook}. {extra}|"
                     "This {topic} crime story by {maker} is about {hook}. {extra}",
        series_sep=", Book ",
        topics=(
            _topic(
                "detective",
                "Inspector|Detective|Case|Clue|Witness|Alibi|Suspect|Evidence",
                "a weary inspector hunting a serial killer|a detective with one last case before retirement|"
                "a locked-room murder with no suspects|a missing girl and a town full of secrets|"
                "a forensic clue that changes everything",
            ),
            _topic(
                "noir",
                "Rain|Gin|Shadows|Dame|Hustle|Alley|Smoke|Racket",
                "a private eye in rain-soaked Los Angeles|a femme fatale and a double-cross|"
                "gangsters, speakeasies and corrupt cops|a gambler who owes the mob|"
                "a hardboiled detective on the wrong side of the law",
            ),
            _topic(
                "cozy",
                "Bakeshop|Village|Tea Shop|Summer Fete|Vicarage|Bookshop|Knitting Circle|Cat",
                "an amateur sleuth who runs a village bakeshop|murder at the church fete|"
                "a retired teacher solving crimes with her cat|poison at the summer fete|"
                "a bookshop owner and a body in the stacks",
            ),
            _topic(
                "courtroom",
                "Verdict|Jury|Courtroom|Testimony|Appeal|Defense|Trial|Objection",
                "a young lawyer defending an innocent client|a jury that has been bribed|"
                "a courtroom battle against a powerful corporation|a judge with a dangerous secret|"
                "the appeal of a man on death row",
            ),
            _topic(
                "espionage",
                "Agent|Cipher|Double Agent|Safehouse|Dossier|Handler|Mole|Extraction",
                "a mole inside the intelligence service|a spy hunted across Cold War Berlin|"
                "a stolen dossier and a deadly chase|a retired agent pulled back for one last mission|"
                "codes, safehouses and betrayal",
            ),
            _topic(
                "real-life",
                "Killer|Cold Case|Heist|Confession|Con Man|Manhunt|Ransom|Crime Scene",
                "the real story of a famous bank heist|a decades-old cold case finally solved|"
                "the manhunt for a notorious killer|a con man who fooled an entire city|"
                "a journalist's investigation into a wrongful conviction",
            ),
        ),
    ),
)


TOPICS_PER_CATEGORY = len(CATEGORIES[0].topics)
N_TOPICS = len(CATEGORIES) * TOPICS_PER_CATEGORY
_FIELDS = ("adj", "adjl", "noun", "noun2", "topic", "hook", "maker", "extra")


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the defaults give the behaviour documented in the module docstring."""

    days: int = 365
    """Length of the simulated period (interaction timestamps start at `start`)."""
    slate_size: int = 10
    logging_temperature: float = 1.0
    """Temperature of the logging softmax: lower is greedier (and gives smaller propensities)."""
    logging_noise: float = 0.75
    """Std of the logging policy's per-(user, topic) error on the true taste."""
    position_bias: tuple[float, ...] | None = None
    """Examination probability per position; default ``1 / (k + 1) ** 0.7``."""
    click_bias: float = -2.5
    category_concentration: float = 0.25
    topic_concentration: float = 0.6
    drift_range: tuple[float, float] = (0.4, 1.0)
    new_item_fraction: float = 0.3
    series_fraction: float = 0.12
    zipf_exponent: float = 1.0
    p_new_session: float = 0.28
    p_fresh_topic: float = 0.35
    p_series_next: float = 0.2
    purchase_rate: float = 0.3


def _position_bias(config: SyntheticConfig) -> np.ndarray:
    if config.position_bias is not None:
        bias = np.asarray(config.position_bias, dtype=np.float64)
        if bias.shape != (config.slate_size,) or (bias <= 0).any() or (bias > 1).any():
            raise ConfigError(
                f"position_bias needs {config.slate_size} values in (0, 1]; got {config.position_bias}"
            )
        return bias
    return 1.0 / (np.arange(config.slate_size) + 1.0) ** 0.7


# ----------------------------------------------------------------------------------------------------
# Ground truth
# ----------------------------------------------------------------------------------------------------


def _to_us(ts: Any) -> np.ndarray:
    """Timestamps (polars datetimes, numpy datetime64, datetimes or int microseconds) as int64 µs (UTC)."""
    import polars as pl

    if isinstance(ts, pl.Series):
        if isinstance(ts.dtype, pl.Datetime):
            return ts.dt.epoch("us").to_numpy().astype(np.int64)
        return ts.cast(pl.Int64).to_numpy()
    arr = np.asarray(ts)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[us]").astype(np.int64)
    if arr.dtype == object:
        return _to_us(pl.Series(list(arr)))
    return arr.astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class GroundTruth:
    """The latent state behind a synthetic dataset: tastes, item quality, click model, logging policy.

    Vectorised methods take parallel sequences of ids and timestamps. Ids are the dataset's own
    (``"u000042"``, ``"i000123"``); unknown ids raise `DataError`.
    """

    start_us: int
    categories: tuple[str, ...]
    user_ids: pl.Series  # by user index
    item_ids: pl.Series  # by internal item index (topic-sorted)
    item_topic: np.ndarray
    item_quality: np.ndarray
    item_logging_quality: np.ndarray
    item_created_s: np.ndarray  # seconds after start (negative: before it)
    theta: np.ndarray  # (2, users, categories) category mixtures of the two anchors
    phi: np.ndarray  # (2, users, categories, topics per category) topic mixtures
    drift: np.ndarray  # (users,) final weight of anchor 1
    first_s: np.ndarray  # (users,) first interaction, seconds after start
    last_s: np.ndarray
    logging_noise: np.ndarray  # (users, n_topics)
    position_bias: np.ndarray
    click_bias: float
    logging_temperature: float
    _index: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- id and time mapping ------------------------------------------------------------------------
    def _user_index(self, user_ids: Any) -> np.ndarray:
        return self._lookup(user_ids, self.user_ids, "user_id")

    def _item_index(self, item_ids: Any) -> np.ndarray:
        return self._lookup(item_ids, self.item_ids, "item_id")

    def _lookup(self, ids: Any, known: pl.Series, column: str) -> np.ndarray:
        import polars as pl

        if column not in self._index:
            self._index[column] = pl.DataFrame({"_id": known, "_idx": np.arange(known.len(), dtype=np.int64)})
        query = pl.DataFrame({"_id": pl.Series(ids if not isinstance(ids, str) else [ids], dtype=pl.String)})
        found = query.join(self._index[column], on="_id", how="left", maintain_order="left")["_idx"]
        if found.null_count():
            missing = found.is_null()
            row = int(missing.arg_true()[0]) + 1
            raise DataError(f"unknown id {query['_id'][row - 1]!r} for this synthetic dataset", column=column,
                            row=row, count=int(missing.sum()))
        return found.to_numpy()

    def _seconds(self, ts: Any) -> np.ndarray:
        return (_to_us(ts) - self.start_us) / 1e6

    # -- tastes -----------------------------------------------------------------------------------
    def _lam(self, uidx: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        first = self.first_s[uidx]
        span = np.maximum(self.last_s[uidx] - first, 1.0)
        return self.drift[uidx] * np.clip((t_s - first) / span, 0.0, 1.0)

    def _topic_pref(self, uidx: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """(n, n_topics) true topic distribution of each (user, time)."""
        lam = self._lam(uidx, t_s)[:, None]
        p0 = (self.theta[0, uidx][:, :, None] * self.phi[0, uidx]).reshape(len(uidx), -1)
        p1 = (self.theta[1, uidx][:, :, None] * self.phi[1, uidx]).reshape(len(uidx), -1)
        return (1.0 - lam) * p0 + lam * p1

    def _topic_pref_at(self, uidx: np.ndarray, topic: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """True preference of each user for one topic each: `_topic_pref` without the full matrix."""
        cat, sub = np.divmod(topic, TOPICS_PER_CATEGORY)
        lam = self._lam(uidx, t_s)
        p0 = self.theta[0, uidx, cat].astype(np.float64) * self.phi[0, uidx, cat, sub]
        p1 = self.theta[1, uidx, cat].astype(np.float64) * self.phi[1, uidx, cat, sub]
        return (1.0 - lam) * p0 + lam * p1

    def _affinity_idx(self, uidx: np.ndarray, iidx: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        topic = self.item_topic[iidx]
        pref = self._topic_pref_at(uidx, topic, t_s)
        return np.log(N_TOPICS * np.maximum(pref, TASTE_FLOOR)) + self.item_quality[iidx]

    def category_preference(self, user_ids: Any, ts: Any) -> np.ndarray:
        """(n, n_categories) true category mixture of each user at each time (columns: `categories`)."""
        uidx = self._user_index(user_ids)
        pref = self._topic_pref(uidx, self._seconds(ts))
        return pref.reshape(len(uidx), len(self.categories), TOPICS_PER_CATEGORY).sum(axis=2)

    def affinity(self, user_ids: Any, item_ids: Any, ts: Any) -> np.ndarray:
        """True affinity (a logit) of each user for each item at each time."""
        return self._affinity_idx(self._user_index(user_ids), self._item_index(item_ids), self._seconds(ts))

    def click_probability(self, user_ids: Any, item_ids: Any, positions: Any, ts: Any) -> np.ndarray:
        """P(click) = position_bias[position] * sigmoid(affinity + click_bias), positions 0-based."""
        pos = np.asarray(positions, dtype=np.int64)
        if (pos < 0).any() or (pos >= len(self.position_bias)).any():
            raise ConfigError(f"positions must be in [0, {len(self.position_bias) - 1}]")
        aff = self.affinity(user_ids, item_ids, ts)
        return self.position_bias[pos] * _sigmoid(aff + self.click_bias)

    # -- logging policy ----------------------------------------------------------------------------
    @cached_property
    def _availability(self) -> dict[str, np.ndarray]:
        """Items ordered by (topic, created) with per-topic cumulative logging weights."""
        order = np.lexsort((self.item_created_s, self.item_topic))
        topic_sorted = self.item_topic[order]
        starts = np.searchsorted(topic_sorted, np.arange(N_TOPICS), side="left")
        ends = np.searchsorted(topic_sorted, np.arange(N_TOPICS), side="right")
        q = self.item_logging_quality
        weight = np.exp((q - q.max()) / self.logging_temperature)
        cum = np.empty(len(order), dtype=np.float64)
        for t in range(N_TOPICS):  # per-topic cumsums: no cancellation between topics
            cum[starts[t]:ends[t]] = np.cumsum(weight[order[starts[t]:ends[t]]])
        return {"order": order, "created": self.item_created_s[order], "starts": starts, "ends": ends,
                "weight": weight, "cum": cum}

    def _available(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, n_topics) number of existing items and their summed item weight, per topic, at each time."""
        av = self._availability
        count = np.empty((len(t_s), N_TOPICS), dtype=np.int64)
        mass = np.zeros((len(t_s), N_TOPICS), dtype=np.float64)
        for t in range(N_TOPICS):
            s, e = av["starts"][t], av["ends"][t]
            n = np.searchsorted(av["created"][s:e], t_s, side="right")
            count[:, t] = n
            has = n > 0
            mass[has, t] = av["cum"][s + n[has] - 1]
        return count, mass

    def _logging_topic_factor(self, uidx: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """(n, n_topics) exp(topic part of the logging score / T), scaled so each row's max is 1."""
        pref = self._topic_pref(uidx, t_s)
        score = np.log(N_TOPICS * np.maximum(pref, TASTE_FLOOR)) + self.logging_noise[uidx]
        score /= self.logging_temperature
        return np.exp(score - score.max(axis=1, keepdims=True))

    def _logging_parts(self, uidx: np.ndarray, t_s: np.ndarray) -> dict[str, np.ndarray]:
        """Per row and topic: score factor, existing-item count and weight, logging mass; and Z per row.

        The logging policy's unnormalised weight of item ``i`` is ``factor[topic(i)] * weight[i]``
        for items that exist; ``z`` sums it over all of them.
        """
        factor = self._logging_topic_factor(uidx, t_s)
        count, weight_mass = self._available(t_s)
        mass = factor * weight_mass
        z = mass.sum(axis=1)
        return {"factor": factor, "count": count, "weight_mass": weight_mass, "mass": mass, "z": z}

    def logging_probability(self, user_ids: Any, item_ids: Any, ts: Any) -> np.ndarray:
        """Single-slot probability that the logging policy shows each item (= the position-0 propensity).

        0 for items that do not exist yet at `ts`.
        """
        uidx, iidx, t_s = self._user_index(user_ids), self._item_index(item_ids), self._seconds(ts)
        parts = self._logging_parts(uidx, t_s)
        rows = np.arange(len(uidx))
        p = parts["factor"][rows, self.item_topic[iidx]] * self._availability["weight"][iidx] / parts["z"]
        return np.where(self.item_created_s[iidx] <= t_s, p, 0.0)

    def logging_distribution(self, user_id: str, ts: Any) -> pl.DataFrame:
        """``item_id, probability`` of the single-slot logging policy over every item existing at `ts`."""
        import polars as pl

        t_s = self._seconds(pl.Series([ts]) if not isinstance(ts, pl.Series) else ts)[:1]
        uidx = self._user_index([user_id])
        parts = self._logging_parts(uidx, t_s)
        alive = np.flatnonzero(self.item_created_s <= t_s[0])
        p = parts["factor"][0, self.item_topic[alive]] * self._availability["weight"][alive] / parts["z"][0]
        return pl.DataFrame({"item_id": self.item_ids.gather(alive), "probability": p})

    # -- matrices over a candidate list, for computing true values of target policies -------------------
    def available(self, ts: Any, item_ids: Any) -> np.ndarray:
        """(n_requests, n_items) True where the item exists at the request time (the action set)."""
        return self.item_created_s[self._item_index(item_ids)][None, :] <= self._seconds(ts)[:, None]

    def logging_probability_matrix(self, user_ids: Any, ts: Any, item_ids: Any) -> np.ndarray:
        """(n_requests, n_items) single-slot logging probabilities; rows sum to 1 over the whole catalog."""
        uidx, iidx, t_s = self._user_index(user_ids), self._item_index(item_ids), self._seconds(ts)
        parts = self._logging_parts(uidx, t_s)
        p = parts["factor"][:, self.item_topic[iidx]] * self._availability["weight"][iidx][None, :]
        p /= parts["z"][:, None]
        return np.where(self.item_created_s[iidx][None, :] <= t_s[:, None], p, 0.0)

    def click_probability_matrix(self, user_ids: Any, ts: Any, item_ids: Any, position: int = 0) -> np.ndarray:
        """(n_requests, n_items) true click probabilities if each item were shown at `position`.

        The true single-slot value of a target policy with probabilities ``pi`` (same shape) is
        ``(pi * click_probability_matrix(...)).sum(axis=1).mean()``.
        """
        if not 0 <= position < len(self.position_bias):
            raise ConfigError(f"position must be in [0, {len(self.position_bias) - 1}]; got {position}")
        uidx, iidx, t_s = self._user_index(user_ids), self._item_index(item_ids), self._seconds(ts)
        pref = self._topic_pref(uidx, t_s)[:, self.item_topic[iidx]]
        affinity = np.log(N_TOPICS * np.maximum(pref, TASTE_FLOOR)) + self.item_quality[iidx][None, :]
        return self.position_bias[position] * _sigmoid(affinity + self.click_bias)


# ----------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------


def generate(
    n_interactions: int = 20_000,
    n_users: int | None = None,
    n_items: int | None = None,
    seed: int = 0,
    n_impressions_requests: int | None = None,
    start: str | datetime | date = "2024-01-01",
    config: SyntheticConfig | None = None,
) -> Dataset:
    """A synthetic `Dataset` named ``"synthetic"``; see the module docstring for what it contains.

    Defaults: ``n_users = n_interactions // 20``, ``n_items = max(600, n_interactions // 40)``,
    ``n_impressions_requests = n_interactions // 20`` (0 gives no impressions table).
    """
    dataset, _ = generate_with_truth(
        n_interactions, n_users, n_items, seed, n_impressions_requests, start, config
    )
    return dataset


def generate_with_truth(
    n_interactions: int = 20_000,
    n_users: int | None = None,
    n_items: int | None = None,
    seed: int = 0,
    n_impressions_requests: int | None = None,
    start: str | datetime | date = "2024-01-01",
    config: SyntheticConfig | None = None,
) -> tuple[Dataset, GroundTruth]:
    """Like `generate`, plus the `GroundTruth` needed to compute true values of target policies."""
    cfg = config or SyntheticConfig()
    n_users, n_items, n_requests = _resolve_sizes(
        n_interactions, n_users, n_items, n_impressions_requests, cfg
    )
    start_us = _start_us(start)
    horizon = cfg.days * DAY
    catalog_ss, users_ss, inter_ss, imp_ss = np.random.SeedSequence(seed).spawn(4)

    catalog = _build_catalog(np.random.default_rng(catalog_ss), n_items, horizon, start_us, cfg)
    users = _build_users(np.random.default_rng(users_ss), n_users, n_interactions, horizon, cfg)
    truth = GroundTruth(
        start_us=start_us,
        categories=tuple(c.name for c in CATEGORIES),
        user_ids=_ids("u", n_users),
        item_ids=catalog["item_ids"],
        item_topic=catalog["topic"],
        item_quality=catalog["quality"],
        item_logging_quality=catalog["logging_quality"],
        item_created_s=catalog["created"],
        theta=users["theta"],
        phi=users["phi"],
        drift=users["drift"],
        first_s=users["first_s"],
        last_s=users["last_s"],
        logging_noise=users["noise"],
        position_bias=_position_bias(cfg),
        click_bias=cfg.click_bias,
        logging_temperature=cfg.logging_temperature,
    )
    interactions = _sample_interactions(np.random.default_rng(inter_ss), truth, catalog, users, cfg)
    impressions = None
    if n_requests:
        impressions = _sample_impressions(np.random.default_rng(imp_ss), truth, users, n_requests, cfg)
    notes: dict[str, int | str] = {
        "generator": "recsys.data.synthetic",
        "seed": seed,
        "start": str(start),
        "days": cfg.days,
        "categories": len(CATEGORIES),
        "topics": N_TOPICS,
        "slate_size": cfg.slate_size,
        "logging_temperature": str(cfg.logging_temperature),
        "positions": "0-based",
        "propensity": "Plackett-Luce conditional probability given the items at earlier positions",
    }
    dataset = Dataset(
        items=catalog["frame"],
        interactions=interactions,
        impressions=impressions,
        name="synthetic",
        text_template=TEXT_TEMPLATE,
        notes=notes,
    )
    return dataset, truth


def _resolve_sizes(
    n_interactions: int,
    n_users: int | None,
    n_items: int | None,
    n_requests: int | None,
    cfg: SyntheticConfig,
) -> tuple[int, int, int]:
    if n_interactions < 3:
        raise ConfigError(f"n_interactions must be at least 3 (every user has 3); got {n_interactions}")
    n_users = max(1, n_interactions // 20) if n_users is None else n_users
    if n_users < 1 or 3 * n_users > n_interactions:
        raise ConfigError(
            f"n_users={n_users} is impossible with n_interactions={n_interactions}: "
            "every user needs at least 3"
        )
    n_items = max(600, n_interactions // 40) if n_items is None else n_items
    if n_items < 2 * N_TOPICS:
        raise ConfigError(f"n_items must be at least {2 * N_TOPICS} (two per topic); got {n_items}")
    n_requests = n_interactions // 20 if n_requests is None else n_requests
    if n_requests < 0:
        raise ConfigError(f"n_impressions_requests must be >= 0; got {n_requests}")
    if cfg.days < 7:
        raise ConfigError(f"days must be at least 7; got {cfg.days}")
    if not 1 <= cfg.slate_size <= N_TOPICS:
        raise ConfigError(f"slate_size must be in [1, {N_TOPICS}]; got {cfg.slate_size}")
    if not 0.05 <= cfg.logging_temperature <= 100:
        raise ConfigError(f"logging_temperature must be in [0.05, 100]; got {cfg.logging_temperature}")
    return n_users, n_items, n_requests


def _start_us(start: str | datetime | date) -> int:
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start)
        except ValueError as exc:
            raise ConfigError(f"start must be an ISO date or datetime; got {start!r}") from exc
    if not isinstance(start, datetime):
        start = datetime(start.year, start.month, start.day)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return int(start.timestamp()) * 1_000_000


def _ids(prefix: str, n: int) -> pl.Series:
    """``prefix`` + zero-padded numbers 0..n-1 (6 digits, more when needed)."""
    import polars as pl

    width = max(6, len(str(n - 1)))
    digits = pl.Series(np.arange(n, dtype=np.int64)).cast(pl.String).str.zfill(width)
    return pl.select(pl.concat_str([pl.lit(prefix), pl.lit(digits)])).to_series().alias(f"{prefix}_id")


def _datetimes(start_us: int, seconds: np.ndarray) -> pl.Series:
    """UTC datetimes `seconds` after `start_us`."""
    import polars as pl

    micros = pl.Series(start_us + seconds.astype(np.int64) * 1_000_000, dtype=pl.Int64)
    return micros.cast(pl.Datetime("us", "UTC"))


def _dirichlet(rng: np.random.Generator, alpha: float, shape: tuple[int, ...]) -> np.ndarray:
    """Dirichlet rows along the last axis, from gamma draws (an all-zero row, possible for tiny alpha,
    becomes uniform)."""
    g = rng.standard_gamma(alpha, size=shape)
    total = g.sum(axis=-1, keepdims=True)
    g = np.where(total > 0, g, 1.0)
    return g / g.sum(axis=-1, keepdims=True)


# -- catalog -----------------------------------------------------------------------------------------


def _build_catalog(
    rng: np.random.Generator, n_items: int, horizon: int, start_us: int, cfg: SyntheticConfig
) -> dict[str, Any]:
    """Items in an internal topic-sorted order, their latent properties, text and the public frame."""
    import polars as pl

    n_cat = len(CATEGORIES)
    cat_share = rng.dirichlet(np.full(n_cat, 6.0))
    topic_share = (cat_share[:, None] * rng.dirichlet(np.full(TOPICS_PER_CATEGORY, 3.0), size=n_cat)).ravel()
    counts = 2 + rng.multinomial(n_items - 2 * N_TOPICS, topic_share / topic_share.sum())
    topic = np.repeat(np.arange(N_TOPICS), counts)
    topic_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cat = topic // TOPICS_PER_CATEGORY
    idx = np.arange(n_items)

    # Series: runs of 2-5 consecutive items of one topic.
    unit_len = np.where(rng.random(n_items) < cfg.series_fraction, rng.integers(2, 6, n_items), 1)
    unit = np.repeat(np.arange(n_items), unit_len)[:n_items]
    new_group = np.ones(n_items, dtype=bool)
    new_group[1:] = (unit[1:] != unit[:-1]) | (topic[1:] != topic[:-1])
    group = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    group_len = np.diff(np.append(group_start, n_items))
    head = group_start[group]
    volume = idx - head
    series_len = group_len[group]
    in_series = series_len > 1

    # Popularity: Zipf over a random rank within the category; quality follows popularity loosely.
    order = np.lexsort((rng.random(n_items), cat))
    cat_start = np.searchsorted(cat, np.arange(n_cat))
    rank = np.empty(n_items, dtype=np.int64)
    rank[order] = idx - cat_start[cat[order]]
    pop = (rank + 1.0) ** -cfg.zipf_exponent
    logp = np.log(pop)
    z = (logp - logp.mean()) / max(logp.std(), 1e-9)
    quality = np.clip(0.5 * z + rng.normal(0.0, 0.7, n_items), -3.0, 3.0)
    logging_quality = quality + rng.normal(0.0, 0.5, n_items)

    # Creation times: most items exist before the period; a topic's first item always does.
    is_new = rng.random(n_items) < cfg.new_item_fraction
    created = np.where(is_new, rng.uniform(0, horizon, n_items), -rng.uniform(1, 730 * DAY, n_items))
    created[topic_start] = -rng.uniform(1, 730 * DAY, N_TOPICS)
    series_gap = rng.uniform(30 * DAY, 120 * DAY, len(group_start))
    created = np.minimum(created[head] + volume * series_gap[group], horizon - DAY).astype(np.int64)
    created[topic_start] = np.minimum(created[topic_start], -1)

    # Zipf sampling within a topic: G = topic + normalised cumulative popularity inside the topic.
    cum = np.cumsum(pop)
    before = cum[topic_start] - pop[topic_start]
    total = cum[topic_start + counts - 1] - before
    sampler = topic + (cum - before[topic]) / total[topic]
    sampler[topic_start + counts - 1] = np.arange(N_TOPICS) + 1.0

    # Public ids follow creation order, like an auto-increment key.
    by_created = np.lexsort((idx, created))
    number = np.empty(n_items, dtype=np.int64)
    number[by_created] = idx
    public = _ids("i", n_items)
    item_ids = public.gather(number)

    title, description = _item_text(rng, cat, topic, head, volume, in_series)
    frame = pl.DataFrame(
        {
            "item_id": item_ids,
            "title": title,
            "description": description,
            "category": pl.Series([c.name for c in CATEGORIES], dtype=pl.String).gather(cat),
            "created_at": _datetimes(start_us, created),
        }
    ).select(pl.all().gather(by_created))
    return {
        "frame": frame,
        "item_ids": item_ids,
        "topic": topic,
        "topic_start": topic_start,
        "topic_end": topic_start + counts,
        "cat": cat,
        "head": head,
        "volume": volume,
        "series_len": series_len,
        "quality": quality,
        "logging_quality": logging_quality,
        "created": created,
        "sampler": sampler,
    }


def _vocab(level: str, name: str) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """A flat vocabulary (per category or per topic) with each group's offset and length."""
    import polars as pl

    if level == "category":
        groups = [getattr(c, name) for c in CATEGORIES]
    else:
        groups = [getattr(t, name) for c in CATEGORIES for t in c.topics]
    lengths = np.array([len(g) for g in groups], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return pl.Series([w for g in groups for w in g], dtype=pl.String), offsets, lengths


def _draw(rng: np.random.Generator, group: np.ndarray, level: str, name: str) -> tuple[pl.Series, np.ndarray]:
    words, offsets, lengths = _vocab(level, name)
    pick = (rng.random(len(group)) * lengths[group]).astype(np.int64)
    return words.gather(offsets[group] + pick), pick


def _template_expr(template: str) -> pl.Expr:
    """A polars expression concatenating a template's literals and field columns."""
    import polars as pl

    parts: list[pl.Expr] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        if literal:
            parts.append(pl.lit(literal))
        if name:
            if name not in _FIELDS:
                raise ConfigError(f"template {template!r} uses unknown field {name!r}; known: {_FIELDS}")
            parts.append(pl.col(name))
    return pl.concat_str(parts)


def _item_text(
    rng: np.random.Generator,
    cat: np.ndarray,
    topic: np.ndarray,
    head: np.ndarray,
    volume: np.ndarray,
    in_series: np.ndarray,
) -> tuple[pl.Series, pl.Series]:
    """Titles and descriptions from the vocabularies: vocab gathers + one concat per template."""
    import polars as pl

    n = len(cat)
    adj, _ = _draw(rng, cat, "category", "adjs")
    noun, noun_pick = _draw(rng, topic, "topic", "nouns")
    nouns, offsets, lengths = _vocab("topic", "nouns")
    shift = 1 + (rng.random(n) * (lengths[topic] - 1)).astype(np.int64)
    noun2 = nouns.gather(offsets[topic] + (noun_pick + shift) % lengths[topic])
    hook, _ = _draw(rng, topic, "topic", "hooks")
    maker, _ = _draw(rng, cat, "category", "makers")
    extra, _ = _draw(rng, cat, "category", "extras")
    labels = pl.Series([t.label for c in CATEGORIES for t in c.topics], dtype=pl.String)
    n_titles = np.array([len(c.titles) for c in CATEGORIES])
    n_descs = np.array([len(c.descriptions) for c in CATEGORIES])
    frame = pl.DataFrame(
        {
            "_row": np.arange(n, dtype=np.int64),
            "_cat": cat,
            "_tt": (rng.random(n) * n_titles[cat]).astype(np.int64),
            "_dt": (rng.random(n) * n_descs[cat]).astype(np.int64),
            "adj": adj,
            "adjl": adj.str.to_lowercase(),
            "noun": noun,
            "noun2": noun2,
            "topic": labels.gather(topic),
            "hook": hook,
            "maker": maker,
            "extra": extra,
        }
    )
    parts = []
    for c, category in enumerate(CATEGORIES):
        sub = frame.filter(pl.col("_cat") == c)
        if sub.height == 0:
            continue
        title = pl.when(pl.col("_tt") == 0).then(_template_expr(category.titles[0]))
        for j, template in enumerate(category.titles[1:], start=1):
            title = title.when(pl.col("_tt") == j).then(_template_expr(template))
        desc = pl.when(pl.col("_dt") == 0).then(_template_expr(category.descriptions[0]))
        for j, template in enumerate(category.descriptions[1:], start=1):
            desc = desc.when(pl.col("_dt") == j).then(_template_expr(template))
        parts.append(sub.select("_row", title.alias("title"), desc.alias("description")))
    text = pl.concat(parts).sort("_row")
    base = text["title"]
    series = pl.DataFrame(
        {
            "base": base,
            "desc": text["description"],
            "head_title": base.gather(head),
            "sep": pl.Series([c.series_sep for c in CATEGORIES], dtype=pl.String).gather(cat),
            "vol": (volume + 1).astype(np.int64),
            "in_series": in_series,
        }
    ).select(
        pl.when(pl.col("in_series"))
        .then(pl.concat_str([pl.col("head_title"), pl.col("sep"), pl.col("vol").cast(pl.String)]))
        .otherwise(pl.col("base"))
        .alias("title"),
        pl.when(pl.col("in_series"))
        .then(
            pl.concat_str(
                [pl.col("desc"), pl.lit(" Part "), pl.col("vol").cast(pl.String), pl.lit(" of the "),
                 pl.col("head_title"), pl.lit(" series.")]
            )
        )
        .otherwise(pl.col("desc"))
        .alias("description"),
    )
    return series["title"], series["description"]


# -- users and interactions --------------------------------------------------------------------------


def _build_users(
    rng: np.random.Generator, n_users: int, n_interactions: int, horizon: int, cfg: SyntheticConfig
) -> dict[str, np.ndarray]:
    """Per-user counts, session structure, timestamps (seconds after start) and latent tastes."""
    weight = rng.lognormal(0.0, 1.1, n_users)
    counts = 3 + rng.multinomial(n_interactions - 3 * n_users, weight / weight.sum())
    first_idx = np.concatenate([[0], np.cumsum(counts)[:-1]])
    uid = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    k = np.arange(n_interactions, dtype=np.int64) - first_idx[uid]
    new_session = (k == 0) | (rng.random(n_interactions) < cfg.p_new_session)

    user_start = rng.uniform(0, 0.85 * horizon, n_users)
    span = (horizon - user_start) * np.maximum(rng.random(n_users), rng.random(n_users))
    sessions = np.bincount(uid, weights=new_session, minlength=n_users)
    mean_gap = span / np.maximum(sessions - 1, 1)
    between = np.maximum(rng.exponential(1.0, n_interactions) * mean_gap[uid], 1800.0)
    within = 20.0 + rng.exponential(120.0, n_interactions)
    gap = np.where(new_session, between, within).astype(np.int64)
    gap[k == 0] = 0
    cum = np.cumsum(gap)
    t = user_start.astype(np.int64)[uid] + cum - cum[first_idx][uid]
    last_idx = first_idx + counts - 1

    n_cat = len(CATEGORIES)
    return {
        "counts": counts,
        "first_idx": first_idx,
        "uid": uid,
        "new_session": new_session,
        "t": t,
        "first_s": t[first_idx].astype(np.float64),
        "last_s": t[last_idx].astype(np.float64),
        "theta": _dirichlet(rng, cfg.category_concentration, (2, n_users, n_cat)).astype(np.float32),
        "phi": _dirichlet(rng, cfg.topic_concentration, (2, n_users, n_cat, TOPICS_PER_CATEGORY)).astype(
            np.float32
        ),
        "drift": rng.uniform(*cfg.drift_range, n_users),
        "noise": rng.normal(0.0, cfg.logging_noise, (n_users, N_TOPICS)).astype(np.float32),
    }


def _inverse_cdf(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draws: index of the first cumulative weight above u * row total."""
    cdf = np.cumsum(weights, axis=1, dtype=np.float64)
    pick = (u[:, None] * cdf[:, -1:] >= cdf).sum(axis=1)
    return np.minimum(pick, weights.shape[1] - 1)


def _sample_topics(
    rng: np.random.Generator,
    truth: GroundTruth,
    uidx: np.ndarray,
    anchor: np.ndarray,
    category: np.ndarray | None = None,
    chunk: int = 500_000,
) -> np.ndarray:
    """A topic per row from the user's anchor (0 or 1): category from theta (unless given), topic from phi."""
    u_cat = rng.random(len(uidx))
    u_topic = rng.random(len(uidx))
    out = np.empty(len(uidx), dtype=np.int64)
    for s in range(0, len(uidx), chunk):
        a, us = anchor[s:s + chunk], uidx[s:s + chunk]
        given = category is not None
        c = category[s:s + chunk] if given else _inverse_cdf(truth.theta[a, us], u_cat[s:s + chunk])
        t = _inverse_cdf(truth.phi[a, us, c], u_topic[s:s + chunk])
        out[s:s + chunk] = c * TOPICS_PER_CATEGORY + t
    return out


def _sample_in_topic(rng: np.random.Generator, catalog: dict[str, Any], topic: np.ndarray) -> np.ndarray:
    """Popularity-weighted (Zipf) item draws inside each row's topic."""
    pick = np.searchsorted(catalog["sampler"], topic + rng.random(len(topic)), side="right")
    return np.clip(pick, catalog["topic_start"][topic], catalog["topic_end"][topic] - 1)


def _user_rows(user: np.ndarray, first_idx: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """All row indices of the given users (rows are grouped by user, in user order)."""
    lengths = counts[user]
    ends = np.cumsum(lengths)
    return np.repeat(first_idx[user] - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)


def _sample_interactions(
    rng: np.random.Generator,
    truth: GroundTruth,
    catalog: dict[str, Any],
    users: dict[str, np.ndarray],
    cfg: SyntheticConfig,
) -> pl.DataFrame:
    import polars as pl

    uid, t, new_session = users["uid"], users["t"], users["new_session"]
    n = len(uid)
    rows = np.arange(n, dtype=np.int64)
    lam = truth._lam(uid, t.astype(np.float64))
    anchor = (rng.random(n) < lam).astype(np.int64)
    step = rng.random(n)
    fresh = new_session | (step < cfg.p_fresh_topic)
    series_next = ~new_session & (step >= 1.0 - cfg.p_series_next)

    # Topic: drawn from the current taste at fresh steps, carried forward within the session otherwise.
    topic = np.zeros(n, dtype=np.int64)
    fresh_rows = np.flatnonzero(fresh)
    topic[fresh_rows] = _sample_topics(rng, truth, uid[fresh_rows], anchor[fresh_rows])
    topic = topic[np.maximum.accumulate(np.where(fresh, rows, 0))]

    # Item: popularity draw in the topic, or the next volume of the series the run started from.
    item = _sample_in_topic(rng, catalog, topic)
    base = np.maximum.accumulate(np.where(series_next, 0, rows))
    steps = rows - base
    base_item = item[base]
    target = base_item + steps
    ok = series_next & (catalog["series_len"][base_item] > 1)
    ok &= catalog["volume"][base_item] + steps < catalog["series_len"][base_item]
    item = np.where(ok, target, item)

    # Repairs: items must exist at interaction time and a user rarely sees an item twice. A repeat can
    # only involve rows of the same user, so after the first pass only the repaired users are rechecked.
    created = catalog["created"]
    check = rows
    for attempt in range(8):
        key = pl.Series(uid[check] * len(created) + item[check])
        bad = (created[item[check]] > t[check]) | ~key.is_first_distinct().to_numpy()
        bad_rows = check[bad]
        if len(bad_rows) == 0:
            break
        if attempt >= 4:  # the topic is exhausted for this user: another of their topics in the category
            category = topic[bad_rows] // TOPICS_PER_CATEGORY
            topic[bad_rows] = _sample_topics(rng, truth, uid[bad_rows], anchor[bad_rows], category)
        item[bad_rows] = _sample_in_topic(rng, catalog, topic[bad_rows])
        check = _user_rows(np.unique(uid[bad_rows]), users["first_idx"], users["counts"])
    too_new = np.flatnonzero(created[item] > t)
    item[too_new] = catalog["topic_start"][catalog["topic"][item[too_new]]]  # always an old item

    # Events: purchases are likelier for items the user truly likes.
    affinity = truth._affinity_idx(uid, item, t.astype(np.float64))
    purchase = rng.random(n) < cfg.purchase_rate * _sigmoid(affinity - 2.5)

    order = np.argsort(t, kind="stable")
    return pl.DataFrame(
        {
            "user_id": truth.user_ids.gather(uid[order]),
            "item_id": truth.item_ids.gather(item[order]),
            "ts": _datetimes(truth.start_us, t[order]),
            "event": pl.Series(["view", "purchase"], dtype=pl.String).gather(purchase[order].astype(np.int8)),
            "weight": np.where(purchase[order], 3.0, 1.0),
        }
    )


# -- impressions -------------------------------------------------------------------------------------


def _sample_impressions(
    rng: np.random.Generator,
    truth: GroundTruth,
    users: dict[str, np.ndarray],
    n_requests: int,
    cfg: SyntheticConfig,
    chunk: int = 50_000,
) -> pl.DataFrame:
    """Requests with Plackett-Luce slates from the logging policy, propensities and clicks."""
    import polars as pl

    uid = users["uid"][rng.integers(0, len(users["uid"]), n_requests)]  # request rate ∝ activity
    first, last = truth.first_s[uid], truth.last_s[uid]
    t_s = np.floor(first + rng.random(n_requests) * (last - first + DAY))
    order = np.lexsort((uid, t_s))
    uid, t_s = uid[order], t_s[order]

    k_slots = cfg.slate_size
    items = np.empty((n_requests, k_slots), dtype=np.int64)
    props = np.empty((n_requests, k_slots), dtype=np.float64)
    for s in range(0, n_requests, chunk):
        sl = slice(s, min(s + chunk, n_requests))
        items[sl], props[sl] = _slates(rng, truth, uid[sl], t_s[sl], k_slots)

    flat_u = np.repeat(uid, k_slots)
    flat_t = np.repeat(t_s, k_slots)
    flat_pos = np.tile(np.arange(k_slots, dtype=np.int64), n_requests)
    flat_item = items.ravel()
    affinity = truth._affinity_idx(flat_u, flat_item, flat_t)
    p_click = truth.position_bias[flat_pos] * _sigmoid(affinity + truth.click_bias)
    clicked = rng.random(len(flat_item)) < p_click
    request_ids = _ids("r", n_requests)
    return pl.DataFrame(
        {
            "request_id": request_ids.gather(np.repeat(np.arange(n_requests), k_slots)),
            "user_id": truth.user_ids.gather(flat_u),
            "ts": _datetimes(truth.start_us, flat_t.astype(np.int64)),
            "item_id": truth.item_ids.gather(flat_item),
            "position": pl.Series(flat_pos, dtype=pl.Int32),
            "clicked": clicked,
            "propensity": props.ravel(),
        }
    )


def _slates(
    rng: np.random.Generator, truth: GroundTruth, uidx: np.ndarray, t_s: np.ndarray, k_slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """Plackett-Luce slates without replacement, by rejection of repeats, with conditional propensities."""
    av = truth._availability
    parts = truth._logging_parts(uidx, t_s)
    factor, mass, z = parts["factor"], parts["mass"], parts["z"]
    m = len(uidx)
    chosen = np.full((m, k_slots), -1, dtype=np.int64)
    props = np.empty((m, k_slots), dtype=np.float64)
    used = np.zeros(m, dtype=np.float64)  # logging mass already placed in the slate
    for k in range(k_slots):
        todo = np.arange(m)
        for _ in range(200):
            if len(todo) == 0:
                break
            topic = _inverse_cdf(mass[todo], rng.random(len(todo)))
            target = rng.random(len(todo)) * parts["weight_mass"][todo, topic]
            offset = np.empty(len(todo), dtype=np.int64)
            for tp in np.unique(topic):  # per-topic cumulative weights, items in creation order
                sel = np.flatnonzero(topic == tp)
                cum = av["cum"][av["starts"][tp]:av["ends"][tp]]
                offset[sel] = np.searchsorted(cum, target[sel], side="right")
            offset = np.minimum(offset, parts["count"][todo, topic] - 1)  # only items that exist
            item = av["order"][av["starts"][topic] + offset]
            repeat = (chosen[todo, :k] == item[:, None]).any(axis=1)
            chosen[todo[~repeat], k] = item[~repeat]
            todo = todo[repeat]
        for r in todo:  # pathological concentration: exact draw over the remaining items
            alive = np.flatnonzero(truth.item_created_s <= t_s[r])
            w = factor[r, truth.item_topic[alive]] * av["weight"][alive]
            w[np.isin(alive, chosen[r, :k])] = 0.0
            chosen[r, k] = alive[rng.choice(len(alive), p=w / w.sum())]
        item = chosen[:, k]
        own = factor[np.arange(m), truth.item_topic[item]] * av["weight"][item]
        remaining = z - used
        for r in np.flatnonzero(remaining <= 1e-8 * z):  # cancellation (greedy policies): sum exactly
            alive = np.flatnonzero(truth.item_created_s <= t_s[r])
            alive = alive[~np.isin(alive, chosen[r, :k])]
            remaining[r] = np.sum(factor[r, truth.item_topic[alive]] * av["weight"][alive])
        props[:, k] = np.minimum(own / remaining, 1.0)
        used += own
    return chosen, props
