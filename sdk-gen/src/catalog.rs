//! Reads the event catalog out of `proto/` the way the server does (the `event_info` option
//! of each `EventType` value, decoded with prost-reflect), so that every SDK's constants come
//! from the same single source of truth as the server's validation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use prost_reflect::{DescriptorPool, DynamicMessage, Value};

/// The enum whose values are the catalog.
const ENUM: &str = "herald.v1.EventType";
/// The option carrying each value's facts.
const EXTENSION: &str = "herald.v1.event_info";
/// The prefix protobuf style puts on every value of `EventType`.
const VALUE_PREFIX: &str = "EVENT_TYPE_";
/// `PayloadShape.PAYLOAD_SHAPE_LIST`.
const SHAPE_LIST: i32 = 2;

/// One event type of the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The enum value's number.
    pub number: i32,
    /// The value's name without `EVENT_TYPE_`, e.g. `LICENSE_CREATED`: the constant's name in
    /// every language.
    pub constant: String,
    /// Dotted name, e.g. `license.created`.
    pub name: String,
    pub trigger: String,
    pub payload: String,
    pub resource_type: String,
    /// `data` is a list of resource objects rather than one.
    pub list: bool,
    pub also_accepts: Vec<String>,
}

impl Entry {
    /// The variant prost generates for this value: the constant in UpperCamelCase
    /// (`LICENSE_CHECK_IN_REQUIRED_SOON` → `LicenseCheckInRequiredSoon`).
    pub fn rust_variant(&self) -> String {
        self.constant
            .split('_')
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut chars = w.chars();
                let first = chars.next().map(|c| c.to_ascii_uppercase());
                first
                    .into_iter()
                    .chain(chars.map(|c| c.to_ascii_lowercase()))
                    .collect::<String>()
            })
            .collect()
    }
}

/// The `.proto` files under `<proto_root>/herald/v1`, sorted so the compilation (and any
/// error it reports) does not depend on the directory's order.
pub fn proto_files(proto_root: &Path) -> Result<Vec<PathBuf>> {
    let dir = proto_root.join("herald/v1");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no .proto files in {}", dir.display());
    }
    Ok(files)
}

/// Compiles `proto_root` with protox and returns the catalog in enum order.
pub fn load(proto_root: &Path) -> Result<Vec<Entry>> {
    let files = proto_files(proto_root)?;
    let mut compiler = protox::Compiler::new([proto_root])
        .with_context(|| format!("opening {}", proto_root.display()))?;
    compiler
        .include_imports(true)
        .open_files(&files)
        .map_err(|e| match e.file() {
            Some(file) => anyhow!("{file}: {e}"),
            None => anyhow!("compiling {}: {e}", proto_root.display()),
        })?;
    // Through the encoded form, as the server does: the dynamic encoding keeps the
    // `event_info` extension values on the enum values' options.
    let pool = DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice())
        .context("decoding the compiled descriptors")?;
    from_pool(&pool)
}

/// The catalog held by `pool`'s `herald.v1.EventType`.
pub fn from_pool(pool: &DescriptorPool) -> Result<Vec<Entry>> {
    let enum_desc = pool
        .get_enum_by_name(ENUM)
        .ok_or_else(|| anyhow!("{ENUM} is not defined"))?;
    let ext = pool
        .get_extension_by_name(EXTENSION)
        .ok_or_else(|| anyhow!("{EXTENSION} is not defined"))?;
    let mut entries: Vec<Entry> = Vec::new();
    for value in enum_desc.values() {
        if value.number() == 0 {
            continue;
        }
        let options = value.options();
        if !options.has_extension(&ext) {
            bail!("{} has no ({EXTENSION}) option", value.name());
        }
        let info = options.get_extension(&ext);
        let info = info
            .as_message()
            .ok_or_else(|| anyhow!("{}: ({EXTENSION}) is not a message", value.name()))?;
        let constant = value
            .name()
            .strip_prefix(VALUE_PREFIX)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| anyhow!("{} does not start with {VALUE_PREFIX}", value.name()))?
            .to_string();
        if !constant.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            // Digits would make prost's variant names (heck's word splitting) ambiguous to
            // reproduce here; no event type needs them.
            bail!("{}: constant names may hold A-Z and _ only", value.name());
        }
        let entry = Entry {
            number: value.number(),
            constant,
            name: string_field(info, "name")?,
            trigger: string_field(info, "trigger")?,
            payload: string_field(info, "payload")?,
            resource_type: string_field(info, "resource_type")?,
            list: info
                .get_field_by_name("shape")
                .and_then(|v| v.as_enum_number())
                == Some(SHAPE_LIST),
            also_accepts: info
                .get_field_by_name("also_accepts")
                .and_then(|v| {
                    v.as_list().map(|l| {
                        l.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                })
                .unwrap_or_default(),
        };
        if entry.name.is_empty() {
            bail!("{}: ({EXTENSION}).name is empty", value.name());
        }
        if let Some(dup) = entries.iter().find(|e| e.name == entry.name) {
            bail!(
                "{} and EVENT_TYPE_{} both name '{}'",
                value.name(),
                dup.constant,
                entry.name
            );
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        bail!("{ENUM} has no event types");
    }
    Ok(entries)
}

fn string_field(info: &DynamicMessage, field: &str) -> Result<String> {
    info.get_field_by_name(field)
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| anyhow!("({EXTENSION}) has no string field `{field}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto")
    }

    #[test]
    fn reads_the_repository_catalog() {
        let entries = load(&proto_root()).unwrap();
        assert_eq!(entries.len(), 99);
        let created = entries
            .iter()
            .find(|e| e.name == "license.created")
            .unwrap();
        assert_eq!(created.constant, "LICENSE_CREATED");
        assert_eq!(created.resource_type, "licenses");
        assert_eq!(created.trigger, "When a license is created");
        assert!(!created.list);
        let checked_out = entries
            .iter()
            .find(|e| e.name == "license.checked-out")
            .unwrap();
        assert_eq!(checked_out.also_accepts, ["licenses"]);
        assert!(
            entries
                .iter()
                .find(|e| e.name == "license.users.attached")
                .unwrap()
                .list
        );
        // Enum order, not alphabetical by accident: numbers increase.
        assert!(entries.windows(2).all(|w| w[0].number < w[1].number));
    }

    #[test]
    fn rust_variants_follow_prost() {
        let entry = Entry {
            number: 1,
            constant: "LICENSE_CHECK_IN_REQUIRED_SOON".into(),
            name: String::new(),
            trigger: String::new(),
            payload: String::new(),
            resource_type: String::new(),
            list: false,
            also_accepts: vec![],
        };
        assert_eq!(entry.rust_variant(), "LicenseCheckInRequiredSoon");
    }

    #[test]
    fn a_value_without_event_info_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("herald/v1");
        std::fs::create_dir_all(&v1).unwrap();
        let catalog = std::fs::read_to_string(proto_root().join("herald/v1/catalog.proto"))
            .unwrap()
            .replace(
                "EVENT_TYPE_UNSPECIFIED = 0;",
                "EVENT_TYPE_UNSPECIFIED = 0;\n  EVENT_TYPE_BARE = 9999;",
            );
        std::fs::write(v1.join("catalog.proto"), catalog).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("EVENT_TYPE_BARE"), "{err}");
    }
}
