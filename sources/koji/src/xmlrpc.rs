//! A small XML-RPC codec: what Koji's hub speaks. Calls carry ints, booleans
//! and strings; answers are parsed into [`Value`]s, or a fault.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::Reader;

/// An XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<int>`, `<i4>`, `<i8>`.
    Int(i64),
    /// `<boolean>`.
    Bool(bool),
    /// `<string>` (or bare text).
    Str(String),
    /// `<double>`.
    Double(f64),
    /// `<nil/>` (Koji marshals with `allow_none`).
    Nil,
    /// `<array>`.
    Array(Vec<Value>),
    /// `<struct>`.
    Struct(BTreeMap<String, Value>),
}

impl Value {
    /// A member of a struct.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Struct(m) => m.get(key),
            _ => None,
        }
    }
    /// An integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// An array's values.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A parameter of a call.
pub enum Param<'a> {
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(&'a str),
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The body of a call.
pub fn call(method: &str, params: &[Param<'_>]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\"?>\n<methodCall><methodName>{}</methodName><params>",
        escape(method)
    );
    for p in params {
        let v = match p {
            Param::Int(i) => format!("<int>{i}</int>"),
            Param::Bool(b) => format!("<boolean>{}</boolean>", u8::from(*b)),
            Param::Str(s) => format!("<string>{}</string>", escape(s)),
        };
        out.push_str(&format!("<param><value>{v}</value></param>"));
    }
    out.push_str("</params></methodCall>\n");
    out
}

/// A fault the server answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// The fault code.
    pub code: i64,
    /// The fault string.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open(String),
    Close(String),
    Empty(String),
    Text(String),
}

fn tokens(xml: &str) -> Result<Vec<Tok>, String> {
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match reader.read_event().map_err(|e| format!("not XML: {e}"))? {
            Event::Start(e) => out.push(Tok::Open(
                String::from_utf8_lossy(e.name().as_ref()).into_owned(),
            )),
            Event::End(e) => out.push(Tok::Close(
                String::from_utf8_lossy(e.name().as_ref()).into_owned(),
            )),
            Event::Empty(e) => out.push(Tok::Empty(
                String::from_utf8_lossy(e.name().as_ref()).into_owned(),
            )),
            Event::Text(t) => {
                let text = t.decode().map_err(|e| format!("bad text: {e}"))?;
                let text = quick_xml::escape::unescape(&text)
                    .map_err(|e| format!("bad text: {e}"))?
                    .into_owned();
                out.push(Tok::Text(text));
            }
            Event::GeneralRef(r) => {
                let name = String::from_utf8_lossy(&r).into_owned();
                let ch = match name.as_str() {
                    "amp" => "&".to_string(),
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "quot" => "\"".to_string(),
                    "apos" => "'".to_string(),
                    n if n.starts_with("#x") => u32::from_str_radix(&n[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .unwrap_or_default(),
                    n if n.starts_with('#') => n[1..]
                        .parse()
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .unwrap_or_default(),
                    _ => return Err(format!("unknown entity &{name};")),
                };
                out.push(Tok::Text(ch));
            }
            Event::CData(c) => out.push(Tok::Text(String::from_utf8_lossy(&c).into_owned())),
            Event::Eof => break,
            _ => {}
        }
    }
    // Merge adjacent texts (entities split them); drop whitespace between tags.
    let mut merged: Vec<Tok> = Vec::new();
    for t in out {
        match (merged.last_mut(), t) {
            (Some(Tok::Text(a)), Tok::Text(b)) => a.push_str(&b),
            (_, t) => merged.push(t),
        }
    }
    Ok(merged)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
    /// Whitespace-only texts are skipped, except inside <string> and <value>.
    raw_text: bool,
}

impl Parser {
    fn peek(&mut self) -> Option<&Tok> {
        if !self.raw_text {
            while matches!(self.toks.get(self.at), Some(Tok::Text(t)) if t.trim().is_empty()) {
                self.at += 1;
            }
        }
        self.toks.get(self.at)
    }
    fn next(&mut self) -> Result<Tok, String> {
        self.peek();
        let t = self
            .toks
            .get(self.at)
            .cloned()
            .ok_or("unexpected end of the answer")?;
        self.at += 1;
        Ok(t)
    }
    fn open(&mut self, name: &str) -> Result<(), String> {
        match self.next()? {
            Tok::Open(n) if n == name => Ok(()),
            other => Err(format!("expected <{name}>, found {other:?}")),
        }
    }
    fn close(&mut self, name: &str) -> Result<(), String> {
        match self.next()? {
            Tok::Close(n) if n == name => Ok(()),
            other => Err(format!("expected </{name}>, found {other:?}")),
        }
    }
    fn text_until(&mut self, name: &str) -> Result<String, String> {
        self.raw_text = true;
        let text = match self.toks.get(self.at).cloned() {
            Some(Tok::Text(t)) => {
                self.at += 1;
                t
            }
            _ => String::new(),
        };
        self.raw_text = false;
        self.close(name)?;
        Ok(text)
    }

    /// After `<value>`.
    fn value(&mut self) -> Result<Value, String> {
        self.raw_text = true;
        let tok = self.toks.get(self.at).cloned();
        self.raw_text = false;
        let v = match tok {
            Some(Tok::Text(t)) if matches!(self.toks.get(self.at + 1), Some(Tok::Close(n)) if n == "value") =>
            {
                self.at += 1;
                Value::Str(t)
            }
            Some(Tok::Close(n)) if n == "value" => Value::Str(String::new()),
            _ => match self.next()? {
                Tok::Empty(n) if n == "nil" => Value::Nil,
                Tok::Empty(n) if n == "string" => Value::Str(String::new()),
                Tok::Open(n) => match n.as_str() {
                    "int" | "i4" | "i8" => {
                        let t = self.text_until(&n)?;
                        Value::Int(t.trim().parse().map_err(|_| format!("bad <{n}> `{t}`"))?)
                    }
                    "boolean" => Value::Bool(self.text_until(&n)?.trim() == "1"),
                    "string" | "dateTime.iso8601" => Value::Str(self.text_until(&n)?),
                    "double" => {
                        let t = self.text_until(&n)?;
                        Value::Double(
                            t.trim()
                                .parse()
                                .map_err(|_| format!("bad <double> `{t}`"))?,
                        )
                    }
                    "nil" => {
                        self.close("nil")?;
                        Value::Nil
                    }
                    "array" => {
                        let mut items = Vec::new();
                        match self.next()? {
                            Tok::Empty(d) if d == "data" => {}
                            Tok::Open(d) if d == "data" => {
                                while matches!(self.peek(), Some(Tok::Open(v)) if v == "value") {
                                    self.open("value")?;
                                    items.push(self.value()?);
                                }
                                self.close("data")?;
                            }
                            other => return Err(format!("expected <data>, found {other:?}")),
                        }
                        self.close("array")?;
                        Value::Array(items)
                    }
                    "struct" => {
                        let mut members = BTreeMap::new();
                        while matches!(self.peek(), Some(Tok::Open(m)) if m == "member") {
                            self.open("member")?;
                            self.open("name")?;
                            let name = self.text_until("name")?;
                            self.open("value")?;
                            members.insert(name, self.value()?);
                            self.close("member")?;
                        }
                        self.close("struct")?;
                        Value::Struct(members)
                    }
                    other => return Err(format!("unknown XML-RPC type <{other}>")),
                },
                other => return Err(format!("expected a value, found {other:?}")),
            },
        };
        self.close("value")?;
        Ok(v)
    }
}

/// Parses a `methodResponse`: its one value, or its fault.
pub fn response(xml: &str) -> Result<Result<Value, Fault>, String> {
    let mut p = Parser {
        toks: tokens(xml)?,
        at: 0,
        raw_text: false,
    };
    p.open("methodResponse")?;
    match p.next()? {
        Tok::Open(n) if n == "params" => {
            p.open("param")?;
            p.open("value")?;
            let v = p.value()?;
            p.close("param")?;
            p.close("params")?;
            Ok(Ok(v))
        }
        Tok::Open(n) if n == "fault" => {
            p.open("value")?;
            let v = p.value()?;
            p.close("fault")?;
            let code = v.get("faultCode").and_then(Value::as_int).unwrap_or(0);
            let message = v
                .get("faultString")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Ok(Err(Fault { code, message }))
        }
        other => Err(format!("expected <params> or <fault>, found {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_koji_shaped_answers() {
        let xml = r#"<?xml version='1.0'?>
<methodResponse>
<params>
<param>
<value><array><data>
<value><struct>
<member><name>id</name><value><int>1234</int></value></member>
<member><name>arch</name><value><string>aarch64</string></value></member>
<member><name>label</name><value>aarch64</value></member>
<member><name>weight</name><value><double>2.5</double></value></member>
<member><name>result</name><value><nil/></value></member>
<member><name>note</name><value><string>a &amp; b</string></value></member>
<member><name>empty</name><value><string></string></value></member>
</struct></value>
</data></array></value>
</param>
</params>
</methodResponse>"#;
        let v = response(xml).unwrap().unwrap();
        let t = &v.as_array().unwrap()[0];
        assert_eq!(t.get("id").and_then(Value::as_int), Some(1234));
        assert_eq!(t.get("arch").and_then(Value::as_str), Some("aarch64"));
        assert_eq!(t.get("label").and_then(Value::as_str), Some("aarch64"));
        assert_eq!(t.get("weight"), Some(&Value::Double(2.5)));
        assert_eq!(t.get("result"), Some(&Value::Nil));
        assert_eq!(t.get("note").and_then(Value::as_str), Some("a & b"));
        assert_eq!(t.get("empty").and_then(Value::as_str), Some(""));
    }

    #[test]
    fn parses_a_fault() {
        let xml = "<?xml version='1.0'?><methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1000</int></value></member><member><name>faultString</name><value><string>GenericError: task 7 failed</string></value></member></struct></value></fault></methodResponse>";
        assert_eq!(
            response(xml).unwrap(),
            Err(Fault {
                code: 1000,
                message: "GenericError: task 7 failed".into()
            })
        );
        assert!(response("<html>oops</html>").is_err());
    }

    #[test]
    fn writes_calls() {
        let c = call("getTaskChildren", &[Param::Int(42), Param::Bool(false)]);
        assert!(c.contains("<methodName>getTaskChildren</methodName>"));
        assert!(c.contains("<param><value><int>42</int></value></param><param><value><boolean>0</boolean></value></param>"));
    }
}
