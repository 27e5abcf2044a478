//! The fraud team's rules: a small condition language over a scored payment and the
//! verdict that rules and model reach together.
//!
//! A condition reads like `score >= 0.9 and count_1h > 5`, `risk_level = 'highest'`,
//! `amount > 1000 or new_merchant = 1`, `category in ('gambling', 'crypto')`:
//!
//! - names: `score`; the strings `risk_level`, `category`, `merchant`; and the numeric
//!   names given when parsing (the built-in features and the extra attributes). An
//!   unknown name is refused when the rule is parsed, not when it runs;
//! - comparisons `= != < <= > >=` between a name and a literal (numbers like `5`,
//!   `-0.5`, `1e3`; single-quoted strings with `''` for a quote); strings only take
//!   `=`, `!=`, `in` and `not in`, and compare exactly (case-sensitive);
//! - `in (...)` / `not in (...)`, `and`, `or`, `not`, parentheses; `not` binds tightest,
//!   then `and`, then `or` (as in SQL). Keywords are case-insensitive;
//! - NaN (a missing feature): every comparison and `in` with NaN is false, `!=` too, so
//!   `not (x > 5)` is the way to match missing values as well.
//!
//! Evaluation walks the parsed tree and allocates nothing.
//!
//! Verdict ([`RuleSet::evaluate`]): rules are kept sorted by (priority ascending, name)
//! and all of them are evaluated; the fired ones are reported in that order. The verdict
//! is `Block` if any block rule fired, else `Review` if any review rule fired, else
//! `Allow` if any allow rule fired (allow-listing overrides the model), else the model's
//! own verdict (see [`model_action`]).

use super::error::{FraudError, Result};
use super::features::BUILTIN_FEATURES;

/// Deepest nesting of parentheses and `not` accepted (keeps recursion bounded).
pub const MAX_NESTING: usize = 64;
/// Longest condition text accepted.
pub const MAX_RULE_BYTES: usize = 16 * 1024;

/// What a rule (or the model) says about a payment; ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Allow,
    Review,
    Block,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Review => "review",
            Action::Block => "block",
        }
    }

    /// Inverse of [`Action::name`] (case-insensitive).
    pub fn from_name(s: &str) -> Option<Action> {
        match s.to_ascii_lowercase().as_str() {
            "allow" => Some(Action::Allow),
            "review" => Some(Action::Review),
            "block" => Some(Action::Block),
            _ => None,
        }
    }
}

/// The model's verdict from its risk level when no rule decides: `highest` → block,
/// `elevated` → review, anything else → allow.
pub fn model_action(risk_level: &str) -> Action {
    match risk_level {
        "highest" => Action::Block,
        "elevated" => Action::Review,
        _ => Action::Allow,
    }
}

/// The numeric names rules may use: the built-in features, then `extra` attributes. The
/// values passed to [`RuleInput::values`] follow this order.
pub fn numeric_names(extra: &[String]) -> Vec<String> {
    BUILTIN_FEATURES
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect()
}

/// What one evaluation sees.
#[derive(Debug, Clone, Copy)]
pub struct RuleInput<'a> {
    pub score: f64,
    pub risk_level: &'a str,
    pub category: &'a str,
    pub merchant: &'a str,
    /// In the order of the numeric names the rules were parsed with; a missing slot
    /// reads as NaN.
    pub values: &'a [f64],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumVar {
    Score,
    Value(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrVar {
    RiskLevel,
    Category,
    Merchant,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Num(NumVar, Cmp, f64),
    Str(StrVar, bool, String),
    NumIn(NumVar, Vec<f64>),
    StrIn(StrVar, Vec<String>),
}

impl Expr {
    fn eval(&self, x: &RuleInput<'_>) -> bool {
        match self {
            Expr::And(a, b) => a.eval(x) && b.eval(x),
            Expr::Or(a, b) => a.eval(x) || b.eval(x),
            Expr::Not(a) => !a.eval(x),
            Expr::Num(v, op, lit) => {
                let v = num(*v, x);
                !v.is_nan()
                    && match op {
                        Cmp::Eq => v == *lit,
                        Cmp::Ne => v != *lit,
                        Cmp::Lt => v < *lit,
                        Cmp::Le => v <= *lit,
                        Cmp::Gt => v > *lit,
                        Cmp::Ge => v >= *lit,
                    }
            }
            Expr::Str(v, eq, lit) => (string(*v, x) == lit) == *eq,
            Expr::NumIn(v, lits) => {
                let v = num(*v, x);
                lits.contains(&v)
            }
            Expr::StrIn(v, lits) => {
                let s = string(*v, x);
                lits.iter().any(|l| l == s)
            }
        }
    }
}

fn num(v: NumVar, x: &RuleInput<'_>) -> f64 {
    match v {
        NumVar::Score => x.score,
        NumVar::Value(i) => x.values.get(i).copied().unwrap_or(f64::NAN),
    }
}

fn string<'a>(v: StrVar, x: &RuleInput<'a>) -> &'a str {
    match v {
        StrVar::RiskLevel => x.risk_level,
        StrVar::Category => x.category,
        StrVar::Merchant => x.merchant,
    }
}

/// One named rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub priority: i32,
    /// The condition as written.
    pub text: String,
    cond: Expr,
}

impl Rule {
    /// Parses `condition` over `score`, the string names and `numeric` names (see
    /// [`numeric_names`]); errors carry the byte position of the offending token.
    pub fn parse(
        name: &str,
        action: Action,
        priority: i32,
        condition: &str,
        numeric: &[String],
    ) -> Result<Rule> {
        let err = |position: usize, message: String| FraudError::RuleSyntax {
            rule: name.to_string(),
            position,
            message,
        };
        if condition.len() > MAX_RULE_BYTES {
            return Err(err(
                MAX_RULE_BYTES,
                format!("the condition is longer than {MAX_RULE_BYTES} bytes"),
            ));
        }
        let tokens = lex(condition).map_err(|(p, m)| err(p, m))?;
        let mut p = Parser {
            tokens: &tokens,
            i: 0,
            numeric,
        };
        let cond = p.or(0).map_err(|(p, m)| err(p, m))?;
        if let Some(t) = p.tokens.get(p.i).filter(|t| t.tok != Tok::End) {
            return Err(err(t.pos, format!("unexpected {}", t.tok.describe())));
        }
        Ok(Rule {
            name: name.to_string(),
            action,
            priority,
            text: condition.to_string(),
            cond,
        })
    }

    pub fn matches(&self, x: &RuleInput<'_>) -> bool {
        self.cond.eval(x)
    }
}

/// Rules in evaluation order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Sorts by (priority, name) and refuses two rules of one name.
    pub fn new(mut rules: Vec<Rule>) -> Result<RuleSet> {
        rules.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        let mut names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(FraudError::DuplicateRule(w[0].to_string()));
        }
        Ok(RuleSet { rules })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Evaluates every rule, leaves the indexes (into [`RuleSet::rules`]) of those that
    /// fired in `fired` (cleared first; reuse it and nothing is allocated) and returns
    /// the verdict, `model` deciding when no rule fired.
    pub fn evaluate(&self, x: &RuleInput<'_>, model: Action, fired: &mut Vec<usize>) -> Action {
        fired.clear();
        let mut seen: [bool; 3] = [false; 3];
        for (i, r) in self.rules.iter().enumerate() {
            if r.matches(x) {
                fired.push(i);
                seen[r.action as usize] = true;
            }
        }
        if seen[Action::Block as usize] {
            Action::Block
        } else if seen[Action::Review as usize] {
            Action::Review
        } else if seen[Action::Allow as usize] {
            Action::Allow
        } else {
            model
        }
    }

    /// [`RuleSet::evaluate`] returning the names of the rules that fired.
    pub fn verdict(&self, x: &RuleInput<'_>, model: Action) -> (Action, Vec<&str>) {
        let mut fired = Vec::new();
        let a = self.evaluate(x, model, &mut fired);
        (
            a,
            fired.iter().map(|&i| self.rules[i].name.as_str()).collect(),
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    Cmp(Cmp),
    LParen,
    RParen,
    Comma,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("\"{s}\""),
            Tok::Num(n) => format!("number {n}"),
            Tok::Str(_) => "string".into(),
            Tok::Cmp(_) => "operator".into(),
            Tok::LParen => "\"(\"".into(),
            Tok::RParen => "\")\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::End => "end of condition".into(),
        }
    }

    fn is_keyword(&self, k: &str) -> bool {
        matches!(self, Tok::Ident(s) if s.eq_ignore_ascii_case(k))
    }
}

struct Token {
    tok: Tok,
    pos: usize,
}

type PResult<T> = std::result::Result<T, (usize, String)>;

fn lex(s: &str) -> PResult<Vec<Token>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'=' => {
                i += 1;
                Tok::Cmp(Cmp::Eq)
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Cmp(Cmp::Ne)
            }
            b'<' | b'>' => {
                let eq = b.get(i + 1) == Some(&b'=');
                i += 1 + eq as usize;
                Tok::Cmp(match (c, eq) {
                    (b'<', false) => Cmp::Lt,
                    (b'<', true) => Cmp::Le,
                    (_, false) => Cmp::Gt,
                    _ => Cmp::Ge,
                })
            }
            b'\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match s[i..].find('\'') {
                        None => return Err((start, "unterminated string".into())),
                        Some(k) => {
                            v.push_str(&s[i..i + k]);
                            i += k + 1;
                            if b.get(i) == Some(&b'\'') {
                                v.push('\'');
                                i += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                Tok::Str(v)
            }
            b'0'..=b'9' | b'.' | b'-' => {
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_digit()
                        || b[i] == b'.'
                        || b[i] == b'e'
                        || b[i] == b'E'
                        || ((b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                let text = &s[start..i];
                match text.parse::<f64>() {
                    Ok(v) if v.is_finite() => Tok::Num(v),
                    _ => return Err((start, format!("\"{text}\" is not a number"))),
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                Tok::Ident(s[start..i].to_string())
            }
            _ => {
                let ch = s[start..].chars().next().unwrap_or('?');
                return Err((start, format!("unexpected character '{ch}'")));
            }
        };
        out.push(Token { tok, pos: start });
    }
    out.push(Token {
        tok: Tok::End,
        pos: s.len(),
    });
    Ok(out)
}

enum Var {
    Num(NumVar),
    Str(StrVar),
}

struct Parser<'a> {
    tokens: &'a [Token],
    i: usize,
    numeric: &'a [String],
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // lex() always ends the list with End, and the parser never moves past it.
        &self.tokens[self.i.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> &Token {
        let i = self.i.min(self.tokens.len() - 1);
        if self.tokens[i].tok != Tok::End {
            self.i += 1;
        }
        &self.tokens[i]
    }

    fn unexpected<T>(&self, wanted: &str) -> PResult<T> {
        let t = self.peek();
        Err((
            t.pos,
            format!("expected {wanted}, found {}", t.tok.describe()),
        ))
    }

    fn or(&mut self, depth: usize) -> PResult<Expr> {
        let mut e = self.and(depth)?;
        while self.peek().tok.is_keyword("or") {
            self.next();
            e = Expr::Or(Box::new(e), Box::new(self.and(depth)?));
        }
        Ok(e)
    }

    fn and(&mut self, depth: usize) -> PResult<Expr> {
        let mut e = self.unary(depth)?;
        while self.peek().tok.is_keyword("and") {
            self.next();
            e = Expr::And(Box::new(e), Box::new(self.unary(depth)?));
        }
        Ok(e)
    }

    fn unary(&mut self, depth: usize) -> PResult<Expr> {
        if depth >= MAX_NESTING {
            return Err((self.peek().pos, format!("nested deeper than {MAX_NESTING}")));
        }
        if self.peek().tok.is_keyword("not") {
            self.next();
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.peek().tok == Tok::LParen {
            self.next();
            let e = self.or(depth + 1)?;
            if self.peek().tok != Tok::RParen {
                return self.unexpected("\")\"");
            }
            self.next();
            return Ok(e);
        }
        self.comparison()
    }

    fn variable(&mut self) -> PResult<Var> {
        let t = self.peek();
        let Tok::Ident(name) = &t.tok else {
            return self.unexpected("a name");
        };
        let pos = t.pos;
        let var = match name.as_str() {
            "score" => Var::Num(NumVar::Score),
            "risk_level" => Var::Str(StrVar::RiskLevel),
            "category" => Var::Str(StrVar::Category),
            "merchant" => Var::Str(StrVar::Merchant),
            n => match self.numeric.iter().position(|k| k == n) {
                Some(i) => Var::Num(NumVar::Value(i)),
                None => return Err((pos, format!("unknown name \"{n}\""))),
            },
        };
        self.next();
        Ok(var)
    }

    fn comparison(&mut self) -> PResult<Expr> {
        let var = self.variable()?;
        let negate = self.peek().tok.is_keyword("not");
        if negate {
            self.next();
            if !self.peek().tok.is_keyword("in") {
                return self.unexpected("\"in\" after \"not\"");
            }
        }
        if self.peek().tok.is_keyword("in") {
            self.next();
            let e = self.in_list(var)?;
            return Ok(if negate { Expr::Not(Box::new(e)) } else { e });
        }
        let (op, op_pos) = match self.peek().tok {
            Tok::Cmp(op) => (op, self.peek().pos),
            _ => return self.unexpected("a comparison operator or \"in\""),
        };
        self.next();
        let lit_pos = self.peek().pos;
        match (var, self.next().tok.clone()) {
            (Var::Num(v), Tok::Num(n)) => Ok(Expr::Num(v, op, n)),
            (Var::Str(v), Tok::Str(s)) => match op {
                Cmp::Eq => Ok(Expr::Str(v, true, s)),
                Cmp::Ne => Ok(Expr::Str(v, false, s)),
                _ => Err((op_pos, "strings only compare with =, != and in".into())),
            },
            (Var::Num(_), Tok::Str(_)) => Err((lit_pos, "a number is expected here".into())),
            (Var::Str(_), Tok::Num(_)) => Err((lit_pos, "a quoted string is expected here".into())),
            (_, t) => Err((lit_pos, format!("expected a value, found {}", t.describe()))),
        }
    }

    fn in_list(&mut self, var: Var) -> PResult<Expr> {
        if self.peek().tok != Tok::LParen {
            return self.unexpected("\"(\"");
        }
        self.next();
        let (mut nums, mut strs) = (Vec::new(), Vec::new());
        loop {
            let pos = self.peek().pos;
            match (&var, self.next().tok.clone()) {
                (Var::Num(_), Tok::Num(n)) => nums.push(n),
                (Var::Str(_), Tok::Str(s)) => strs.push(s),
                (Var::Num(_), _) => return Err((pos, "a number is expected here".into())),
                (Var::Str(_), _) => return Err((pos, "a quoted string is expected here".into())),
            }
            match self.peek().tok {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => {
                    self.next();
                    break;
                }
                _ => return self.unexpected("\",\" or \")\""),
            }
        }
        Ok(match var {
            Var::Num(v) => Expr::NumIn(v, nums),
            Var::Str(v) => Expr::StrIn(v, strs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        numeric_names(&["ip_risk".to_string()])
    }

    fn rule(text: &str) -> Rule {
        Rule::parse("r", Action::Review, 0, text, &names()).unwrap()
    }

    fn syntax(text: &str) -> (usize, String) {
        match Rule::parse("r", Action::Block, 0, text, &names()) {
            Err(FraudError::RuleSyntax {
                position, message, ..
            }) => (position, message),
            other => panic!("{text}: expected a syntax error, got {other:?}"),
        }
    }

    /// Values: amount = 1500, count_1h = 6, new_merchant = 0, ip_risk = NaN.
    fn values() -> Vec<f64> {
        let n = names();
        let mut v = vec![0.0; n.len()];
        let set = |v: &mut Vec<f64>, k: &str, x: f64| {
            let i = n.iter().position(|s| s == k).unwrap();
            v[i] = x;
        };
        set(&mut v, "amount", 1500.0);
        set(&mut v, "count_1h", 6.0);
        set(&mut v, "ip_risk", f64::NAN);
        v
    }

    fn check(text: &str, expected: bool) {
        let v = values();
        let x = RuleInput {
            score: 0.92,
            risk_level: "highest",
            category: "gambling",
            merchant: "Joe's",
            values: &v,
        };
        assert_eq!(rule(text).matches(&x), expected, "{text}");
    }

    #[test]
    fn each_operator() {
        check("score >= 0.9 and count_1h > 5", true);
        check("score >= 0.92", true);
        check("score > 0.92", false);
        check("score <= 0.92", true);
        check("score < 0.92", false);
        check("score = 0.92", true);
        check("score != 0.92", false);
        check("amount > 1e3", true);
        check("amount > -5", true);
        check("risk_level = 'highest'", true);
        check("risk_level != 'highest'", false);
        check("merchant = 'Joe''s'", true);
        check("amount > 1000 or new_merchant = 1", true);
        check("category in ('gambling', 'crypto')", true);
        check("category not in ('gambling', 'crypto')", false);
        check("count_1h in (1, 6)", true);
        check("count_1h IN (1, 2)", false);
        check("not amount > 1000", false);
        check("NOT (amount > 1000) OR category = 'crypto'", false);
    }

    #[test]
    fn precedence() {
        // and binds tighter than or: true or (false and false) = true.
        check("score > 0.5 or amount < 0 and count_1h < 0", true);
        // Parentheses change it: (true or false) and false = false.
        check("(score > 0.5 or amount < 0) and count_1h < 0", false);
        // not binds tighter than and: (not false) and true.
        check("not amount < 0 and score > 0.5", true);
        check("not (amount < 0 and score > 0.5)", true);
        check("not not score > 0.5", true);
    }

    #[test]
    fn nan_compares_false() {
        for op in ["=", "!=", "<", "<=", ">", ">="] {
            check(&format!("ip_risk {op} 0.5"), false);
        }
        check("ip_risk in (0.5)", false);
        check("not ip_risk > 0.5", true);
        // Values shorter than the names read as NaN, never panic.
        let r = rule("ip_risk < 1 or amount < 1");
        let x = RuleInput {
            score: f64::NAN,
            risk_level: "",
            category: "",
            merchant: "",
            values: &[],
        };
        assert!(!r.matches(&x));
        assert!(!rule("score >= 0").matches(&x));
    }

    #[test]
    fn syntax_errors_have_positions() {
        assert_eq!(syntax("bogus > 1"), (0, "unknown name \"bogus\"".into()));
        assert_eq!(syntax("score > 1 and nope = 2").0, 14);
        assert_eq!(syntax("score >").0, 7);
        assert_eq!(syntax("score 1").0, 6);
        assert_eq!(syntax("(score > 1").0, 10);
        assert_eq!(syntax("score > 1)").0, 9);
        assert_eq!(syntax("category = 'abc").0, 11);
        assert_eq!(
            syntax("score > 'x'"),
            (8, "a number is expected here".into())
        );
        assert_eq!(syntax("category > 'x'").0, 9);
        assert_eq!(syntax("category = 3").0, 11);
        assert_eq!(syntax("category in ('a', 3)").0, 18);
        assert_eq!(syntax("score in 1").0, 9);
        assert_eq!(syntax("score > 1..2").0, 8);
        assert_eq!(syntax("score # 1").0, 6);
        assert_eq!(syntax("score not 1").0, 10);
        assert_eq!(syntax("").0, 0);
        let deep = format!("{}score > 1{}", "(".repeat(100), ")".repeat(100));
        assert!(syntax(&deep).1.contains("nested"));
        let msg = Rule::parse("big_amount", Action::Block, 0, "x > 1", &names())
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "rule \"big_amount\": unknown name \"x\" at position 0");
    }

    #[test]
    fn verdicts() {
        let n = names();
        let mk = |name: &str, action, prio, text: &str| {
            Rule::parse(name, action, prio, text, &n).unwrap()
        };
        let set = RuleSet::new(vec![
            mk("z_review_big", Action::Review, 10, "amount > 1000"),
            mk("a_allow_vip", Action::Allow, 10, "merchant = 'vip'"),
            mk("block_gambling", Action::Block, 20, "category = 'gambling'"),
            mk("allow_small", Action::Allow, 5, "amount < 10"),
        ])
        .unwrap();
        let order: Vec<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "allow_small",
                "a_allow_vip",
                "z_review_big",
                "block_gambling"
            ]
        );
        let input = |amount: f64, category: &'static str, merchant: &'static str| {
            let mut v = vec![0.0; n.len()];
            v[0] = amount;
            (v, category, merchant)
        };
        let run = |(v, c, m): (Vec<f64>, &str, &str), model| {
            let x = RuleInput {
                score: 0.5,
                risk_level: "elevated",
                category: c,
                merchant: m,
                values: &v,
            };
            let (a, names) = set.verdict(&x, model);
            (a, names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        // Block beats review, and both fire names are reported in order.
        assert_eq!(
            run(input(5000.0, "gambling", "x"), Action::Allow),
            (
                Action::Block,
                vec!["z_review_big".to_string(), "block_gambling".to_string()]
            )
        );
        // Review beats allow.
        assert_eq!(
            run(input(5000.0, "food", "vip"), Action::Allow).0,
            Action::Review
        );
        // Allow-listing overrides the model's block.
        assert_eq!(
            run(input(5.0, "food", "x"), Action::Block),
            (Action::Allow, vec!["allow_small".to_string()])
        );
        // No rule: the model decides.
        assert_eq!(
            run(input(50.0, "food", "x"), model_action("elevated")),
            (Action::Review, vec![])
        );
        assert_eq!(model_action("highest"), Action::Block);
        assert_eq!(model_action("normal"), Action::Allow);
        // The fired buffer is reused.
        let mut fired = Vec::with_capacity(4);
        let v = vec![5000.0; n.len()];
        let x = RuleInput {
            score: 0.0,
            risk_level: "",
            category: "gambling",
            merchant: "",
            values: &v,
        };
        assert_eq!(set.evaluate(&x, Action::Allow, &mut fired), Action::Block);
        assert_eq!(fired, [2, 3]);
        assert_eq!(fired.capacity(), 4);
        assert!(matches!(
            RuleSet::new(vec![
                mk("same", Action::Allow, 1, "score > 0"),
                mk("same", Action::Block, 2, "score > 0")
            ]),
            Err(FraudError::DuplicateRule(n)) if n == "same"
        ));
        assert_eq!(Action::from_name("BLOCK"), Some(Action::Block));
        assert_eq!(Action::from_name("deny"), None);
    }
}
