"""The synthetic catalog's vocabulary: ten categories, six topics each, their words and templates.

Every description template carries the category's `signature` (directly or through `extras`), and
topic nouns and hooks are specific to their topic: that is what makes text similarity reflect
category and topic. Templates use the fields adj, adjl, noun, noun2, topic, hook, maker, extra
(filled by `recsys.data.synthetic.catalog`).
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_TEMPLATE = "{title} | {category} | {description}"


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
    name: str,
    signature: str,
    adjs: str,
    makers: str,
    extras: str,
    titles: str,
    descriptions: str,
    series_sep: str,
    topics: tuple[Topic, ...],
) -> Category:
    """A `Category` from ``|``-separated word lists (compact to read and to edit)."""
    adj, maker, extra, title, description = (tuple(v.split("|")) for v in (adjs, makers, extras, titles, descriptions))
    return Category(name, signature, adj, maker, extra, title, description, series_sep, topics)


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
        adjs="Simple|Everyday|Modern|Rustic|Weeknight|Seasonal|Homemade|Essential|Fresh|Cozy|Fearless|Complete",
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
                "Thermal Tights|Running Jacket|Wind Shell|Beanie|Running Gloves|Base Layer|Rain Jacket|Neck Gaiter",
                "winter runs below freezing|staying dry in cold rain|windy coastal runs|"
                "layering on dark winter mornings|visibility on snowy evenings",
            ),
            _topic(
                "long-distance",
                "Hydration Vest|Soft Flask|Water Belt|Bottle Pack|Electrolyte Mix|Energy Gel|Hydration Pack|Race Belt",
                "carrying water on long runs|fuel and electrolytes for marathon training|"
                "hands-free hydration|hot summer long runs|energy gels during ultras",
            ),
            _topic(
                "data-driven",
                "GPS Watch|Heart Rate Strap|Foot Pod|Running Watch|Training Watch|Sport Earbuds|Armband|Pace Tracker",
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
        makers="Playful Pine|BrightBlocks|Tinker Town|Wonder Kids Co.|Huggable|Little Explorers|Funbox|Mighty Mini",
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
                "Real Estate|Mortgage|Landlord|Rental Property|First Home|Property Ladder|Down Payment|Home Equity",
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
        makers="Harriet Quinn|J. D. Mercer|Agatha Crane|Liam Walsh|Beatrice Moreau|Colin Strand|Ruth Abara|Nils Ekdahl",
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
