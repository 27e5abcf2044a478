//! Reference data the generator draws from. Small fixed lists: realism comes from how rows
//! combine them (skewed customers and merchants, home locations, log-normal amounts).

/// ISO 4217 code, name, minor units, approximate units per US dollar (for amount scale).
pub const CURRENCIES: &[(&str, &str, i16, f64)] = &[
    ("USD", "US Dollar", 2, 1.0),
    ("EUR", "Euro", 2, 0.92),
    ("GBP", "Pound Sterling", 2, 0.79),
    ("JPY", "Yen", 0, 150.0),
    ("CAD", "Canadian Dollar", 2, 1.36),
    ("AUD", "Australian Dollar", 2, 1.52),
    ("CHF", "Swiss Franc", 2, 0.88),
    ("SEK", "Swedish Krona", 2, 10.5),
    ("BRL", "Brazilian Real", 2, 5.0),
    ("INR", "Indian Rupee", 2, 83.0),
    ("MXN", "Mexican Peso", 2, 17.0),
    ("SGD", "Singapore Dollar", 2, 1.34),
    ("ZAR", "Rand", 2, 18.5),
    ("PLN", "Zloty", 2, 4.0),
];

/// City, ISO 3166 country, latitude, longitude, index into CURRENCIES of the local currency,
/// relative weight (bigger cities get more customers).
pub const CITIES: &[(&str, &str, f64, f64, usize, u32)] = &[
    ("New York", "US", 40.7128, -74.0060, 0, 10),
    ("Los Angeles", "US", 34.0522, -118.2437, 0, 8),
    ("Chicago", "US", 41.8781, -87.6298, 0, 6),
    ("Houston", "US", 29.7604, -95.3698, 0, 5),
    ("Miami", "US", 25.7617, -80.1918, 0, 4),
    ("Seattle", "US", 47.6062, -122.3321, 0, 4),
    ("Toronto", "CA", 43.6532, -79.3832, 4, 5),
    ("Vancouver", "CA", 49.2827, -123.1207, 4, 3),
    ("Mexico City", "MX", 19.4326, -99.1332, 10, 6),
    ("Sao Paulo", "BR", -23.5505, -46.6333, 8, 7),
    ("Rio de Janeiro", "BR", -22.9068, -43.1729, 8, 4),
    ("London", "GB", 51.5074, -0.1278, 2, 9),
    ("Manchester", "GB", 53.4808, -2.2426, 2, 3),
    ("Paris", "FR", 48.8566, 2.3522, 1, 7),
    ("Lyon", "FR", 45.7640, 4.8357, 1, 2),
    ("Berlin", "DE", 52.5200, 13.4050, 1, 6),
    ("Munich", "DE", 48.1351, 11.5820, 1, 3),
    ("Madrid", "ES", 40.4168, -3.7038, 1, 5),
    ("Barcelona", "ES", 41.3874, 2.1686, 1, 4),
    ("Rome", "IT", 41.9028, 12.4964, 1, 4),
    ("Milan", "IT", 45.4642, 9.1900, 1, 4),
    ("Amsterdam", "NL", 52.3676, 4.9041, 1, 3),
    ("Dublin", "IE", 53.3498, -6.2603, 1, 2),
    ("Zurich", "CH", 47.3769, 8.5417, 6, 2),
    ("Stockholm", "SE", 59.3293, 18.0686, 7, 2),
    ("Warsaw", "PL", 52.2297, 21.0122, 13, 3),
    ("Tokyo", "JP", 35.6762, 139.6503, 3, 9),
    ("Osaka", "JP", 34.6937, 135.5023, 3, 4),
    ("Singapore", "SG", 1.3521, 103.8198, 11, 4),
    ("Mumbai", "IN", 19.0760, 72.8777, 9, 8),
    ("Bengaluru", "IN", 12.9716, 77.5946, 9, 5),
    ("Sydney", "AU", -33.8688, 151.2093, 5, 4),
    ("Melbourne", "AU", -37.8136, 144.9631, 5, 3),
    ("Johannesburg", "ZA", -26.2041, 28.0473, 12, 3),
    ("Cape Town", "ZA", -33.9249, 18.4241, 12, 2),
];

pub const FIRST_NAMES: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Maria",
    "Luis",
    "Ana",
    "Hiroshi",
    "Yuki",
    "Priya",
    "Arjun",
    "Wei",
    "Mei",
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Sofia",
    "Lucas",
    "Chloe",
    "Mateo",
    "Amelia",
    "Hugo",
    "Ingrid",
    "Piotr",
    "Zanele",
    "Thabo",
    "Aoife",
    "Sean",
    "Lena",
    "Felix",
    "Giulia",
    "Marco",
    "Ravi",
    "Ananya",
];

pub const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Martin",
    "Lee",
    "Tanaka",
    "Suzuki",
    "Sato",
    "Patel",
    "Sharma",
    "Singh",
    "Chen",
    "Wang",
    "Li",
    "Muller",
    "Schmidt",
    "Schneider",
    "Dubois",
    "Laurent",
    "Rossi",
    "Russo",
    "Silva",
    "Santos",
    "Oliveira",
    "Kowalski",
    "Nowak",
    "Andersson",
    "Johansson",
    "OBrien",
    "Murphy",
    "Dlamini",
    "Nkosi",
    "Fernandez",
    "Costa",
    "Novak",
];

pub const EMAIL_DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "mail.example",
    "inbox.example",
];

pub const STREETS: &[&str] = &[
    "Main St",
    "High Street",
    "Oak Avenue",
    "Station Road",
    "Church Lane",
    "Park Road",
    "Rue de la Paix",
    "Hauptstrasse",
    "Calle Mayor",
    "Via Roma",
    "Avenida Paulista",
    "Market Street",
    "King Street",
    "Queen Street",
    "Mill Lane",
];

/// Industry, ISO 18245 merchant category code, relative weight.
pub const INDUSTRIES: &[(&str, &str, u32)] = &[
    ("grocery", "5411", 20),
    ("restaurants", "5812", 16),
    ("fast_food", "5814", 12),
    ("fuel", "5541", 8),
    ("clothing", "5651", 7),
    ("electronics", "5732", 5),
    ("digital_goods", "5818", 6),
    ("travel_airline", "4511", 3),
    ("hotels", "7011", 4),
    ("ride_hailing", "4121", 6),
    ("pharmacy", "5912", 5),
    ("gambling", "7995", 2),
    ("jewelry", "5944", 2),
    ("money_transfer", "4829", 2),
    ("subscriptions", "5968", 5),
];

pub const MERCHANT_WORDS: &[&str] = &[
    "Blue", "North", "Golden", "Urban", "Green", "Swift", "Bright", "Silver", "Prime", "Harbor",
    "Summit", "Pioneer", "Cedar", "Atlas", "Nova",
];

pub const MERCHANT_NOUNS: &[&str] = &[
    "Market",
    "Kitchen",
    "Outfitters",
    "Electronics",
    "Travel",
    "Pharmacy",
    "Games",
    "Cafe",
    "Fuel",
    "Rides",
    "Media",
    "Jewels",
    "Transfers",
    "Goods",
    "Hotels",
];

/// Size and relative weight: many small merchants, few enterprises.
pub const MERCHANT_SIZES: &[(&str, u32)] = &[
    ("micro", 35),
    ("small", 35),
    ("medium", 18),
    ("large", 9),
    ("enterprise", 3),
];

/// Standard VAT / GST / sales-tax rate of each country the generator uses, in basis
/// points (rates in force in 2026; the US has no national sales tax).
pub const TAX_RATES: &[(&str, u32)] = &[
    ("AU", 1000),
    ("BR", 1700),
    ("CA", 500),
    ("CH", 810),
    ("DE", 1900),
    ("ES", 2100),
    ("FR", 2000),
    ("GB", 2000),
    ("IE", 2300),
    ("IN", 1800),
    ("IT", 2200),
    ("JP", 1000),
    ("MX", 1600),
    ("NL", 2100),
    ("PL", 2300),
    ("SE", 2500),
    ("SG", 900),
    ("US", 0),
    ("ZA", 1500),
];

/// Customer segments and relative weight.
pub const SEGMENTS: &[(&str, u32)] = &[("standard", 85), ("premium", 10), ("business", 5)];

pub const CARD_BRANDS: &[(&str, u32)] = &[
    ("visa", 55),
    ("mastercard", 33),
    ("amex", 8),
    ("discover", 4),
];
pub const WALLETS: &[&str] = &["apple_pay", "google_pay", "paypal"];
pub const BANKS: &[&str] = &["sepa_debit", "ach_debit", "pix", "upi"];
pub const MOBILE_OS: &[(&str, u32)] = &[("android", 55), ("ios", 45)];
pub const DESKTOP_OS: &[(&str, u32)] = &[
    ("windows", 60),
    ("macos", 30),
    ("linux", 5),
    ("chromeos", 5),
];

/// Status id (see sql/payments_schema.sql) and relative weight of a fresh transaction.
pub const STATUS_WEIGHTS: &[(i16, u32)] = &[
    (2, 9100), // successful
    (3, 500),  // failed
    (4, 200),  // refunded
    (1, 100),  // pending
    (5, 70),   // disputed
    (7, 30),   // chargeback
];
