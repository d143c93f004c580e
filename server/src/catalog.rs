//! The event catalog, read once from the compiled protobuf descriptors: each
//! `EventType` value's `event_info` option is the source of truth, so the server, the
//! SDK generator and `grpcurl describe` all see the same facts.

use std::{collections::HashMap, sync::LazyLock};

use prost_reflect::DescriptorPool;

use crate::{
    error::{Error, Result},
    proto::{self, EventType, EventTypeInfo, PayloadShape},
};

pub struct Catalog {
    types: Vec<EventTypeInfo>,
    by_name: HashMap<String, usize>,
    by_value: HashMap<i32, usize>,
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(Catalog::load);

/// The catalog of this build.
pub fn catalog() -> &'static Catalog {
    &CATALOG
}

impl Catalog {
    fn load() -> Catalog {
        // The descriptor set is compiled into the binary; failing to read it is a build
        // defect that every test would catch, not a runtime condition.
        let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET)
            .expect("embedded descriptor set decodes");
        let enum_desc = pool
            .get_enum_by_name("herald.v1.EventType")
            .expect("herald.v1.EventType exists");
        let ext = pool
            .get_extension_by_name("herald.v1.event_info")
            .expect("herald.v1.event_info exists");
        let mut types = Vec::new();
        for value in enum_desc.values() {
            if value.number() == EventType::Unspecified as i32 {
                continue;
            }
            let options = value.options();
            let info = options.get_extension(&ext);
            let mut info: EventTypeInfo = info
                .as_message()
                .expect("event_info is a message")
                .transcode_to()
                .expect("event_info transcodes");
            info.r#type = value.number();
            types.push(info);
        }
        let by_name = types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let by_value = types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.r#type, i))
            .collect();
        Catalog {
            types,
            by_name,
            by_value,
        }
    }

    /// Every event type, in catalog (enum) order.
    pub fn all(&self) -> &[EventTypeInfo] {
        &self.types
    }

    pub fn by_name(&self, name: &str) -> Option<&EventTypeInfo> {
        self.by_name.get(name).map(|&i| &self.types[i])
    }

    pub fn by_value(&self, value: i32) -> Option<&EventTypeInfo> {
        self.by_value.get(&value).map(|&i| &self.types[i])
    }

    /// Resolves a request's type, given as an enum value or a dotted name (not both).
    pub fn resolve(&self, field_prefix: &str, value: i32, name: &str) -> Result<&EventTypeInfo> {
        let field = |f: &str| {
            if field_prefix.is_empty() {
                f.to_string()
            } else {
                format!("{field_prefix}.{f}")
            }
        };
        match (value, name.is_empty()) {
            (0, true) => Err(Error::invalid(
                field("type"),
                "is required (give `type` or `type_name`, e.g. \"license.created\")",
            )),
            (0, false) => self.by_name(name).ok_or_else(|| {
                Error::invalid(
                    field("type_name"),
                    format!(
                        "unknown event type '{}' (ListEventTypes lists them)",
                        crate::ids::truncate(name, 80)
                    ),
                )
            }),
            (v, true) => self
                .by_value(v)
                .ok_or_else(|| Error::invalid(field("type"), format!("unknown event type {v}"))),
            (v, false) => {
                let info = self.by_value(v).ok_or_else(|| {
                    Error::invalid(field("type"), format!("unknown event type {v}"))
                })?;
                if info.name == name {
                    Ok(info)
                } else {
                    Err(Error::invalid(
                        field("type_name"),
                        format!("'{name}' contradicts type {} ('{}')", v, info.name),
                    ))
                }
            }
        }
    }
}

impl EventTypeInfo {
    pub fn is_list(&self) -> bool {
        self.shape == PayloadShape::List as i32
    }

    /// Whether a payload resource of JSON:API `type` fits this event.
    pub fn accepts_resource_type(&self, ty: &str) -> bool {
        self.resource_type == ty || self.also_accepts.iter().any(|t| t == ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree() {
        let c = catalog();
        assert_eq!(c.all().len(), 99);
        let lic = c.by_name("license.created").unwrap();
        assert_eq!(lic.resource_type, "licenses");
        assert_eq!(c.by_value(lic.r#type).unwrap().name, "license.created");
        assert!(c.by_name("license.users.attached").unwrap().is_list());
        assert!(c.resolve("", 0, "").is_err());
        assert!(c.resolve("", lic.r#type, "license.deleted").is_err());
        assert_eq!(
            c.resolve("", 0, "license.created").unwrap().name,
            "license.created"
        );
    }
}
