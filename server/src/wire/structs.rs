//! JSON to the encoding of `google.protobuf.Struct`, directly.
//!
//! The result decodes to exactly what [`crate::json::json_to_struct`] builds (numbers
//! as doubles, `null` as `NULL_VALUE`), and prost would write the same bytes apart from
//! the order of the map's entries (prost sorts them; decoders do not care). Building the
//! `Struct` first would allocate a tree of maps and strings, and prost computes a nested
//! message's length again at every level that encloses it. Here each length is measured
//! once, in a first pass, and written in a second.

use bytes::{Bytes, BytesMut};
use prost::encoding::{
    WireType, bool, double, encode_key, encode_varint, encoded_len_varint, int32, key_len, string,
};
use serde_json::{Map, Value as Json};

// Field numbers of `google/protobuf/struct.proto`.
/// `Struct.fields`, and the key of a map entry; `ListValue.values`.
const FIELDS: u32 = 1;
/// The value of a map entry.
const ENTRY_VALUE: u32 = 2;
const NULL_VALUE: u32 = 1;
const NUMBER_VALUE: u32 = 2;
const STRING_VALUE: u32 = 3;
const BOOL_VALUE: u32 = 4;
const STRUCT_VALUE: u32 = 5;
const LIST_VALUE: u32 = 6;

/// The encoding of the `Struct` whose fields are `map`.
pub fn encode(map: &Map<String, Json>) -> Bytes {
    let mut sizes = Vec::new();
    let len = measure_struct(map, &mut sizes);
    let mut buf = BytesMut::with_capacity(len);
    let mut next = 0;
    write_struct(map, &sizes, &mut next, &mut buf);
    debug_assert_eq!(buf.len(), len);
    buf.freeze()
}

/// A length-delimited field of `len` bytes, header included.
fn delimited(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The header of an embedded message of `len` bytes, whose fields the caller writes next.
fn header(tag: u32, len: usize, buf: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn entry_len(key: &String, value_len: usize) -> usize {
    // prost leaves out an empty key (the default), as a decoder restores it.
    let key = if key.is_empty() {
        0
    } else {
        string::encoded_len(FIELDS, key)
    };
    key + delimited(ENTRY_VALUE, value_len)
}

/// The length of a `Value` message for `json`, given the length of its `Struct` or
/// `ListValue` body when it has one.
fn value_len(json: &Json, body: usize) -> usize {
    match json {
        Json::Null => int32::encoded_len(NULL_VALUE, &0),
        Json::Bool(b) => bool::encoded_len(BOOL_VALUE, b),
        Json::Number(_) => double::encoded_len(NUMBER_VALUE, &0.0),
        Json::String(s) => string::encoded_len(STRING_VALUE, s),
        Json::Array(_) => delimited(LIST_VALUE, body),
        Json::Object(_) => delimited(STRUCT_VALUE, body),
    }
}

/// Pass one: the body lengths of every `Struct` and `ListValue`, in the order pass two
/// meets them (each before its children). Returns the length of `map`'s body.
fn measure_struct(map: &Map<String, Json>, sizes: &mut Vec<usize>) -> usize {
    let slot = sizes.len();
    sizes.push(0);
    let len = map
        .iter()
        .map(|(k, v)| delimited(FIELDS, entry_len(k, measure_value(v, sizes))))
        .sum();
    sizes[slot] = len;
    len
}

/// Measures `json`'s children (see [`measure_struct`]); returns its `Value` length.
fn measure_value(json: &Json, sizes: &mut Vec<usize>) -> usize {
    let body = match json {
        Json::Object(map) => measure_struct(map, sizes),
        Json::Array(items) => {
            let slot = sizes.len();
            sizes.push(0);
            let len = items
                .iter()
                .map(|v| delimited(FIELDS, measure_value(v, sizes)))
                .sum();
            sizes[slot] = len;
            len
        }
        _ => 0,
    };
    value_len(json, body)
}

/// The body length pass one found for `json`, which pass two meets next.
fn body_at(json: &Json, sizes: &[usize], next: usize) -> usize {
    match json {
        Json::Object(_) | Json::Array(_) => sizes[next],
        _ => 0,
    }
}

fn write_struct(map: &Map<String, Json>, sizes: &[usize], next: &mut usize, buf: &mut BytesMut) {
    *next += 1; // this struct's own length, written by the caller
    for (key, value) in map {
        let value_len = value_len(value, body_at(value, sizes, *next));
        header(FIELDS, entry_len(key, value_len), buf);
        if !key.is_empty() {
            string::encode(FIELDS, key, buf);
        }
        header(ENTRY_VALUE, value_len, buf);
        write_value(value, sizes, next, buf);
    }
}

/// Writes the fields of `json`'s `Value` message (its length is written by the caller).
fn write_value(json: &Json, sizes: &[usize], next: &mut usize, buf: &mut BytesMut) {
    match json {
        // A oneof member is written even when it holds its type's default.
        Json::Null => int32::encode(NULL_VALUE, &0, buf),
        Json::Bool(b) => bool::encode(BOOL_VALUE, b, buf),
        Json::Number(n) => double::encode(NUMBER_VALUE, &n.as_f64().unwrap_or_default(), buf),
        Json::String(s) => string::encode(STRING_VALUE, s, buf),
        Json::Object(map) => {
            header(STRUCT_VALUE, sizes[*next], buf);
            write_struct(map, sizes, next, buf);
        }
        Json::Array(items) => {
            header(LIST_VALUE, sizes[*next], buf);
            *next += 1;
            for item in items {
                header(FIELDS, value_len(item, body_at(item, sizes, *next)), buf);
                write_value(item, sizes, next, buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::Struct;

    use super::*;
    use crate::json::json_to_struct;

    fn same_as_prost(text: &str) {
        let json: Json = serde_json::from_str(text).unwrap();
        let Json::Object(map) = &json else {
            panic!("not an object: {text}")
        };
        let built = json_to_struct(&json).unwrap();
        let direct = encode(map);
        assert_eq!(Struct::decode(direct.clone()).unwrap(), built, "{text}");
        assert_eq!(direct.len(), built.encoded_len(), "{text}");
    }

    #[test]
    fn decodes_to_what_json_to_struct_builds() {
        same_as_prost("{}");
        same_as_prost(r#"{"":""}"#);
        same_as_prost(r#"{"a":null,"b":true,"c":false,"d":0,"e":-1.25,"f":1e300,"g":""}"#);
        same_as_prost(
            r#"{"l":[],"m":[null,[[]],{"x":[1,{"y":{}}]}],"o":{"p":{"q":{"r":"deep"}}}}"#,
        );
        // Lengths past one varint byte, at several levels.
        let long = "x".repeat(300);
        same_as_prost(&format!(
            r#"{{"data":{{"attributes":{{"a":"{long}","b":["{long}","{long}"]}}}},"k{long}":1}}"#
        ));
    }

    #[test]
    fn a_json_api_document_round_trips() {
        same_as_prost(
            r#"{"data":{"id":"5b3f1c2e-3d4a-4c1b-9f2e-7a6b5c4d3e2f","type":"licenses",
                "attributes":{"name":"Pro","key":"ABCD-EFGH","expiry":"2027-01-01T00:00:00.000Z",
                    "status":"ACTIVE","uses":0,"maxMachines":5,"protected":true,"suspended":false,
                    "permissions":["license.validate","machine.create"],"metadata":{"seats":12.5},
                    "lastValidated":null},
                "relationships":{"account":{"data":{"type":"accounts","id":"acct"}},
                    "machines":{"links":{"related":"/v1/accounts/acct/licenses/5b3f/machines"},
                        "meta":{"cores":16,"count":2}}},
                "links":{"self":"/v1/accounts/acct/licenses/5b3f"}},
              "meta":{"idempotencyToken":"tok"}}"#,
        );
    }
}
