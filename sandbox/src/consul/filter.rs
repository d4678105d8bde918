//! The `?filter=` expression language (a subset of HashiCorp's go-bexpr),
//! evaluated against the JSON each result item is rendered as.
//!
//! Supported, as in Consul:
//! - `Selector == "value"`, `Selector != "value"` (strings, numbers, `true`/`false`)
//! - `"value" in Selector`, `"value" not in Selector` (a list contains, a map
//!   has the key, a string contains)
//! - `Selector contains "value"`, `Selector not contains "value"`
//! - `Selector is empty`, `Selector is not empty`
//! - `Selector matches "regex"`, `Selector not matches "regex"`
//! - `and`, `or`, `not`, parentheses; strings in `"..."` or backticks.
//!
//! Selectors are dotted paths (`Service.Meta.instance_id`, `Checks.Status`,
//! `Node.Node`). A path through a list (`Checks.Status`) matches when any
//! element matches; `!=` is the negation of `==`. A selector whose first
//! part is not a field of the result type is rejected, as bexpr does, and
//! any expression outside this subset is a parse error: both answer 400.
//! This module must never silently accept an expression it cannot evaluate.

use regex_automata::meta::Regex;
use serde_json::Value;

/// A parse or validation error, worded for the 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Failed to create boolean expression evaluator: {0}")]
pub struct FilterError(String);

/// A parsed filter.
#[derive(Debug)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match(Vec<String>, Op),
}

#[derive(Debug)]
pub(crate) enum Op {
    Equal(Literal),
    NotEqual(Literal),
    In(Literal),
    NotIn(Literal),
    Empty,
    NotEmpty,
    Matches(Box<Regex>),
    NotMatches(Box<Regex>),
}

#[derive(Debug, Clone)]
pub(crate) enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    LParen,
    RParen,
    Eq,
    Ne,
}

fn tokenize(input: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                tokens.push(if c == '(' {
                    Token::LParen
                } else {
                    Token::RParen
                });
            }
            '=' | '!' => {
                chars.next();
                if chars.next_if(|&(_, n)| n == '=').is_none() {
                    return Err(FilterError(format!("1:{} unexpected \"{c}\"", pos + 1)));
                }
                tokens.push(if c == '=' { Token::Eq } else { Token::Ne });
            }
            '"' | '`' => {
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, ch)) = chars.next() {
                    if ch == c {
                        closed = true;
                        break;
                    }
                    if ch == '\\' && c == '"' {
                        match chars.next() {
                            Some((_, 'n')) => text.push('\n'),
                            Some((_, 't')) => text.push('\t'),
                            Some((_, other)) => text.push(other),
                            None => break,
                        }
                    } else {
                        text.push(ch);
                    }
                }
                if !closed {
                    return Err(FilterError(format!("1:{} unterminated string", pos + 1)));
                }
                tokens.push(Token::Str(text));
            }
            c if c.is_alphanumeric() || "_-.:/".contains(c) => {
                let mut word = String::new();
                while let Some((_, ch)) =
                    chars.next_if(|&(_, ch)| ch.is_alphanumeric() || "_-.:/".contains(ch))
                {
                    word.push(ch);
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(FilterError(format!("1:{} unexpected \"{other}\"", pos + 1))),
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    roots: &'a [&'a str],
}

impl Parser<'_> {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Word(w)) if w == word)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.tokens.get(self.pos) == Some(&Token::LParen) {
            self.pos += 1;
            let inner = self.or()?;
            if self.next() != Some(Token::RParen) {
                return Err(FilterError("missing closing parenthesis".into()));
            }
            return Ok(inner);
        }
        self.matcher()
    }

    fn selector(&mut self) -> Result<Vec<String>, FilterError> {
        match self.next() {
            Some(Token::Word(w)) => {
                let path: Vec<String> = w.split('.').map(str::to_string).collect();
                let root = path.first().map(String::as_str).unwrap_or_default();
                if path.iter().any(String::is_empty) || !self.roots.contains(&root) {
                    return Err(FilterError(format!("Selector \"{w}\" is not valid")));
                }
                Ok(path)
            }
            other => Err(FilterError(format!("expected a selector, found {other:?}"))),
        }
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Literal::Str(s)),
            Some(Token::Word(w)) if w == "true" || w == "false" => Ok(Literal::Bool(w == "true")),
            Some(Token::Word(w)) => w
                .parse::<f64>()
                .map(Literal::Num)
                .map_err(|_| FilterError(format!("expected a value, found \"{w}\""))),
            other => Err(FilterError(format!("expected a value, found {other:?}"))),
        }
    }

    fn regex(&mut self) -> Result<Box<Regex>, FilterError> {
        match self.literal()? {
            Literal::Str(pattern) => Regex::new(&pattern)
                .map(Box::new)
                .map_err(|e| FilterError(format!("invalid regular expression: {e}"))),
            _ => Err(FilterError("matches needs a string".into())),
        }
    }

    fn matcher(&mut self) -> Result<Expr, FilterError> {
        // `"value" in Selector` / `"value" not in Selector`
        if matches!(self.tokens.get(self.pos), Some(Token::Str(_)))
            || matches!(self.tokens.get(self.pos + 1), Some(Token::Word(w)) if w == "in" || w == "not")
        {
            let value = self.literal()?;
            let negate = self.peek_word("not");
            if negate {
                self.pos += 1;
            }
            if !self.peek_word("in") {
                return Err(FilterError("expected \"in\" after a value".into()));
            }
            self.pos += 1;
            let path = self.selector()?;
            return Ok(Expr::Match(
                path,
                if negate {
                    Op::NotIn(value)
                } else {
                    Op::In(value)
                },
            ));
        }
        let path = self.selector()?;
        let op = match self.next() {
            Some(Token::Eq) => Op::Equal(self.literal()?),
            Some(Token::Ne) => Op::NotEqual(self.literal()?),
            Some(Token::Word(w)) if w == "is" => {
                let negate = self.peek_word("not");
                if negate {
                    self.pos += 1;
                }
                if self.next() != Some(Token::Word("empty".into())) {
                    return Err(FilterError("expected \"empty\"".into()));
                }
                if negate { Op::NotEmpty } else { Op::Empty }
            }
            Some(Token::Word(w)) if w == "contains" => Op::In(self.literal()?),
            Some(Token::Word(w)) if w == "matches" => Op::Matches(self.regex()?),
            Some(Token::Word(w)) if w == "not" => match self.next() {
                Some(Token::Word(w)) if w == "contains" => Op::NotIn(self.literal()?),
                Some(Token::Word(w)) if w == "matches" => Op::NotMatches(self.regex()?),
                other => return Err(FilterError(format!("unexpected {other:?} after \"not\""))),
            },
            other => {
                return Err(FilterError(format!(
                    "expected an operator, found {other:?}"
                )));
            }
        };
        Ok(Expr::Match(path, op))
    }
}

/// Parses `input`; `roots` are the fields a selector may start with.
pub(crate) fn parse(input: &str, roots: &[&str]) -> Result<Expr, FilterError> {
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err(FilterError("empty expression".into()));
    }
    let mut parser = Parser {
        tokens: &tokens,
        pos: 0,
        roots,
    };
    let expr = parser.or()?;
    if parser.pos < tokens.len() {
        return Err(FilterError(format!("unexpected {:?}", tokens[parser.pos])));
    }
    Ok(expr)
}

/// The values a path reaches, fanning out through lists.
fn resolve<'v>(value: &'v Value, path: &[String], out: &mut Vec<&'v Value>) {
    match (path.split_first(), value) {
        (None, v) => out.push(v),
        (Some(_), Value::Array(items)) => items.iter().for_each(|i| resolve(i, path, out)),
        (Some((head, rest)), Value::Object(map)) => {
            if let Some(v) = map.get(head) {
                resolve(v, rest, out);
            }
        }
        _ => {}
    }
}

fn equals(value: &Value, literal: &Literal) -> bool {
    match (value, literal) {
        (Value::String(s), Literal::Str(l)) => s == l,
        (Value::String(s), Literal::Num(n)) => s.parse::<f64>().is_ok_and(|v| v == *n),
        (Value::String(s), Literal::Bool(b)) => s == if *b { "true" } else { "false" },
        (Value::Number(v), Literal::Num(n)) => v.as_f64() == Some(*n),
        (Value::Number(v), Literal::Str(s)) => v.to_string() == *s,
        (Value::Bool(v), Literal::Bool(b)) => v == b,
        (Value::Bool(v), Literal::Str(s)) => s == if *v { "true" } else { "false" },
        (Value::Array(items), l) => items.iter().any(|i| equals(i, l)),
        _ => false,
    }
}

fn contains(value: &Value, literal: &Literal) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|i| equals(i, literal)),
        Value::Object(map) => matches!(literal, Literal::Str(k) if map.contains_key(k)),
        Value::String(s) => matches!(literal, Literal::Str(l) if s.contains(l.as_str())),
        _ => false,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

impl Expr {
    /// Whether `item` passes the filter.
    pub(crate) fn eval(&self, item: &Value) -> bool {
        match self {
            Expr::And(a, b) => a.eval(item) && b.eval(item),
            Expr::Or(a, b) => a.eval(item) || b.eval(item),
            Expr::Not(e) => !e.eval(item),
            Expr::Match(path, op) => {
                let mut found = Vec::new();
                resolve(item, path, &mut found);
                match op {
                    Op::Equal(l) => found.iter().any(|v| equals(v, l)),
                    Op::NotEqual(l) => !found.iter().any(|v| equals(v, l)),
                    Op::In(l) => found.iter().any(|v| contains(v, l)),
                    Op::NotIn(l) => !found.iter().any(|v| contains(v, l)),
                    Op::Empty => found.iter().all(|v| is_empty(v)),
                    Op::NotEmpty => found.iter().any(|v| !is_empty(v)),
                    Op::Matches(re) => found
                        .iter()
                        .any(|v| v.as_str().is_some_and(|s| re.is_match(s))),
                    Op::NotMatches(re) => !found
                        .iter()
                        .any(|v| v.as_str().is_some_and(|s| re.is_match(s))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(expr: &str, item: &Value) -> bool {
        parse(expr, &["Service", "Node", "Checks"])
            .map(|e| e.eval(item))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn evaluates_consul_style_expressions() {
        let item = json!({
            "Node": {"Node": "node-1"},
            "Service": {"Meta": {"instance_id": "i-1"}, "Tags": ["a", "b"]},
            "Checks": [{"Status": "passing"}, {"Status": "critical"}]
        });
        assert!(check("Service.Meta.instance_id == \"i-1\"", &item));
        assert!(!check("Service.Meta.instance_id == \"i-2\"", &item));
        assert!(check(
            "Node.Node == `node-1` and \"a\" in Service.Tags",
            &item
        ));
        assert!(parse("Checks.Status == critical", &["Checks"]).is_err());
        assert!(check("Checks.Status == \"critical\"", &item));
        assert!(!check("Checks.Status != \"critical\"", &item));
        assert!(check("not (\"c\" in Service.Tags)", &item));
        assert!(check("Service.Meta is not empty", &item));
        assert!(check("Node.Node matches \"^node-[0-9]+$\"", &item));
    }

    #[test]
    fn rejects_unknown_selectors_and_syntax() {
        assert!(parse("Foo == \"x\"", &["Service"]).is_err());
        assert!(parse("Service.Meta.x === \"x\"", &["Service"]).is_err());
        assert!(parse("Service.Meta.x ==", &["Service"]).is_err());
        assert!(parse("(Service.ID == \"x\"", &["Service"]).is_err());
        assert!(parse("", &["Service"]).is_err());
    }
}
