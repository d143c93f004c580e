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
        /// JSON array of retry delays in seconds; `[]` means the server's schedule.
        #[sea_orm(column_type = "Text")]
        pub retry_schedule: String,
        /// Start of the current run of failed attempts; `None` after a success.
        pub failing_since: Option<i64>,
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
        pub event_type: String,
        /// Stable across automatic and manual retries: `webhook-id` and Keygen's
        /// `meta.idempotencyToken`, on which receivers dedupe.
        pub idempotency_token: String,
        /// `DELIVERING`, `DELIVERED`, `FAILING` or `FAILED`.
        pub status: String,
        pub attempts: i32,
        /// When the next attempt is due; `None` once finished.
        pub next_attempt_at: Option<i64>,
        /// A worker holds the delivery until then; expired means free to take.
        pub locked_until: Option<i64>,
        pub last_attempt_at: Option<i64>,
        pub last_response_code: Option<i32>,
        #[sea_orm(column_type = "Text", nullable)]
        pub last_error: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod attempt {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "attempts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub delivery_id: String,
        pub tenant_id: String,
        pub endpoint_id: String,
        /// 1 for the first attempt of the delivery.
        pub attempt: i32,
        pub started_at: i64,
        pub duration_micros: i64,
        pub status_code: Option<i32>,
        pub succeeded: bool,
        /// `timeout`, `connection_refused`, `dns`, `tls`, `blocked_address`, ...
        pub error_kind: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub error_message: Option<String>,
        /// The response body, truncated.
        #[sea_orm(column_type = "Text")]
        pub response_body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A delivery's latest attempt as PostgreSQL keeps it, on the delivery's own row
/// (migration 9): the same table as [`delivery`], read for the attempt log only, so that
/// the rows the workers load stay as narrow as they were.
pub mod latest_attempt {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub tenant_id: String,
        pub endpoint_id: String,
        /// The latest attempt's number.
        pub attempts: i32,
        /// Set when the latest attempt is kept here rather than in `attempts`.
        pub last_attempt_id: Option<String>,
        pub last_attempt_at: Option<i64>,
        pub last_duration_micros: Option<i64>,
        pub last_response_code: Option<i32>,
        pub last_succeeded: Option<bool>,
        pub last_error_kind: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub last_error_message: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub last_response_body: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl Model {
        /// The attempt kept on the row, if one is.
        pub fn attempt(self) -> Option<super::attempt::Model> {
            Some(super::attempt::Model {
                id: self.last_attempt_id?,
                delivery_id: self.id,
                tenant_id: self.tenant_id,
                endpoint_id: self.endpoint_id,
                attempt: self.attempts,
                started_at: self.last_attempt_at.unwrap_or_default(),
                duration_micros: self.last_duration_micros.unwrap_or_default(),
                status_code: self.last_response_code,
                succeeded: self.last_succeeded.unwrap_or_default(),
                error_kind: self.last_error_kind,
                error_message: self.last_error_message,
                response_body: self.last_response_body.unwrap_or_default(),
            })
        }
    }
}
