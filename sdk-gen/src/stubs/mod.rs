pub mod python;
pub mod typescript;
