//! The JSON writer behind every frame: values are written as they are (strings escaped, numbers
//! in decimal, stored JSON copied as validated), so encoding a frame cannot fail and never has to
//! fall back to sending something else. One pass, no intermediate tree.

use std::fmt::Write as _;

use serde_json::value::RawValue;

/// A value that writes itself as a JSON object's fields.
pub trait Encode {
    fn encode(&self, o: &mut Object<'_>);
}

/// An object's text; `fields` writes its members.
pub fn object(fields: impl FnOnce(&mut Object<'_>)) -> String {
    let mut out = String::with_capacity(128);
    write_object(&mut out, fields);
    out
}

fn write_object(out: &mut String, fields: impl FnOnce(&mut Object<'_>)) {
    out.push('{');
    fields(&mut Object { out, first: true });
    out.push('}');
}

/// The members of one JSON object, written in order.
pub struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl Object<'_> {
    fn key(&mut self, key: &str) -> &mut String {
        if !std::mem::replace(&mut self.first, false) {
            self.out.push(',');
        }
        string(self.out, key);
        self.out.push(':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        let out = self.key(key);
        string(out, value);
        self
    }

    /// `null` when absent.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => {
                self.key(key).push_str("null");
                self
            }
        }
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        let out = self.key(key);
        let _ = write!(out, "{value}");
        self
    }

    /// `null` when absent.
    pub fn opt_int(&mut self, key: &str, value: Option<i64>) -> &mut Self {
        match value {
            Some(v) => self.int(key, v),
            None => {
                self.key(key).push_str("null");
                self
            }
        }
    }

    /// A nested object whose members `fields` writes.
    pub fn object(&mut self, key: &str, fields: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        let out = self.key(key);
        write_object(out, fields);
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    /// JSON already validated (stored `meta`, read back as a `RawValue`).
    pub fn raw(&mut self, key: &str, value: &RawValue) -> &mut Self {
        self.key(key).push_str(value.get());
        self
    }

    pub fn strs(&mut self, key: &str, values: &[String]) -> &mut Self {
        let out = self.key(key);
        out.push('[');
        for (n, v) in values.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            string(out, v);
        }
        out.push(']');
        self
    }

    pub fn nested(&mut self, key: &str, value: &impl Encode) -> &mut Self {
        let out = self.key(key);
        write_object(out, |o| value.encode(o));
        self
    }

    pub fn list<T: Encode>(&mut self, key: &str, values: &[T]) -> &mut Self {
        let out = self.key(key);
        out.push('[');
        for (n, v) in values.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            write_object(out, |o| v.encode(o));
        }
        out.push(']');
        self
    }
}

/// A JSON string: quotes, backslashes and control characters escaped, the rest as UTF-8.
fn string(out: &mut String, s: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escape);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_through_a_json_parser_whatever_they_hold() {
        let nasty = [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "\u{0}\u{1}\u{1f}\n\r\t\u{7f}",
            "é ✓ 𝄞 \u{2028}\u{2029}",
            "\u{feff}ends with \\",
        ];
        for s in nasty {
            let text = object(|o| {
                o.str("s", s);
            });
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["s"], s, "{text}");
        }
    }

    #[test]
    fn every_kind_of_member_is_written_as_json() {
        struct Inner;
        impl Encode for Inner {
            fn encode(&self, o: &mut Object<'_>) {
                o.int("n", -3);
            }
        }
        let raw: Box<RawValue> = serde_json::from_str(r#"{"deep":[1,{"x":null}]}"#).unwrap();
        let text = object(|o| {
            o.str("a", "x")
                .opt_str("b", None)
                .int("c", i64::MIN)
                .bool("d", true)
                .raw("e", &raw)
                .strs("f", &["1".into(), "\"".into()])
                .nested("g", &Inner)
                .list("h", &[Inner, Inner]);
        });
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a":"x","b":null,"c":i64::MIN,"d":true,"e":{"deep":[1,{"x":null}]},
                "f":["1","\""],"g":{"n":-3},"h":[{"n":-3},{"n":-3}]})
        );
    }
}
