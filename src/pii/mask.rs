//! Built-in masks: what a role outside `platform_pii_reader` sees of a protected value.
//! Each keeps just enough for a support agent to recognise a value the customer reads out
//! (an e-mail's first letter and domain, a card's last four digits) and nothing else.

/// The built-in mask names.
pub const BUILT_IN: [&str; 5] = ["email", "name", "phone", "card", "redact"];

/// Applies built-in mask `name`; `None` when `name` is not built in.
pub fn apply(name: &str, value: &str) -> Option<String> {
    Some(match name {
        "email" => email(value),
        "name" => person_name(value),
        "phone" => keep_last_digits(value, 2),
        "card" => keep_last_digits(value, 4),
        "redact" => "[redacted]".to_string(),
        _ => return None,
    })
}

fn stars(n: usize) -> String {
    "*".repeat(n)
}

/// `alice@example.com` -> `a****@example.com`; no `@`: fully starred.
fn email(v: &str) -> String {
    match v.rsplit_once('@') {
        Some((local, domain)) => {
            let mut chars = local.chars();
            match chars.next() {
                Some(first) => format!("{first}{}@{domain}", stars(chars.count())),
                None => format!("@{domain}"),
            }
        }
        None => stars(v.chars().count()),
    }
}

/// `Ada Lovelace` -> `A** L*******`: the first letter of each word.
fn person_name(v: &str) -> String {
    v.split(' ')
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => format!("{first}{}", stars(chars.count())),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every digit but the last `keep` becomes `*`; separators stay.
fn keep_last_digits(v: &str, keep: usize) -> String {
    let digits = v.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    v.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + keep > digits {
                    c
                } else {
                    '*'
                }
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod unit {
    use super::apply;

    #[test]
    fn masks() {
        assert_eq!(
            apply("email", "alice@example.com").as_deref(),
            Some("a****@example.com")
        );
        assert_eq!(apply("email", "no-at-sign").as_deref(), Some("**********"));
        assert_eq!(
            apply("name", "Ada Lovelace").as_deref(),
            Some("A** L*******")
        );
        assert_eq!(apply("name", "Émile Zola").as_deref(), Some("É**** Z***"));
        assert_eq!(
            apply("phone", "+44 20 7946 0958").as_deref(),
            Some("+** ** **** **58")
        );
        assert_eq!(
            apply("card", "4111 1111 1111 1234").as_deref(),
            Some("**** **** **** 1234")
        );
        assert_eq!(apply("card", "12").as_deref(), Some("12"));
        assert_eq!(apply("redact", "anything").as_deref(), Some("[redacted]"));
        assert_eq!(apply("other", "x"), None);
    }
}
