//! sea-orm entities, one module per table (see `migrations/` for the schema and why
//! times are integer microseconds).

pub mod tenant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        /// Base64 of the Ed25519 secret seed; never leaves the server.
        pub signing_key: String,
        /// Hex of the Ed25519 public key.
        pub public_key: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub tenant_id: Option<String>,
        pub role: String,
        pub name: String,
        pub prefix: String,
        /// Hex SHA-256 of the secret: keys are 256 random bits, so a fast hash is enough.
        pub key_hash: String,
        pub created_at: i64,
        pub revoked_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sequence {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sequences")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub value: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        /// Global commit-ordered position; the tail cursor.
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        #[sea_orm(unique)]
        pub id: String,
        pub tenant_id: String,
        /// Dotted catalog name.
        pub event_type: String,
        pub environment: String,
        pub occurred_at: i64,
        pub received_at: i64,
        /// The payload JSON exactly as published.
        #[sea_orm(column_type = "Text")]
        pub payload: String,
        pub idempotency_key: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod endpoint {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "endpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub tenant_id: String,
        #[sea_orm(column_type = "Text")]
        pub url: String,
        /// JSON array of patterns.
        #[sea_orm(column_type = "Text")]
        pub filters: String,
        pub enabled: bool,
        #[sea_orm(column_type = "Text")]
        pub disabled_reason: String,
        #[sea_orm(column_type = "Text")]
        pub description: String,
        /// JSON object of strings.
        #[sea_orm(column_type = "Text")]
        pub metadata: String,
        pub environment: String,
        pub format: String,
        /// Comma-separated scheme names.
        pub schemes: String,
        pub keygen_algorithm: String,
        pub secret: String,
        pub previous_secret: Option<String>,
        pub previous_secret_expires_at: Option<i64>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod delivery {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub tenant_id: String,
        pub event_id: String,
        pub endpoint_id: String,
        pub status: String,
        pub attempts: i32,
        pub next_attempt_at: Option<i64>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
