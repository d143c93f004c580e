//! Tenants, API keys, events (with their global sequence), endpoints and deliveries.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Name,
    SigningKey,
    PublicKey,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    TenantId,
    Role,
    Name,
    Prefix,
    KeyHash,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Sequences {
    Table,
    Name,
    Value,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Seq,
    Id,
    TenantId,
    EventType,
    Environment,
    OccurredAt,
    ReceivedAt,
    Payload,
    IdempotencyKey,
}

#[derive(DeriveIden)]
enum Endpoints {
    Table,
    Id,
    TenantId,
    Url,
    Filters,
    Enabled,
    DisabledReason,
    Description,
    Metadata,
    Environment,
    Format,
    Schemes,
    KeygenAlgorithm,
    Secret,
    PreviousSecret,
    PreviousSecretExpiresAt,
    RetrySchedule,
    FailingSince,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    Id,
    TenantId,
    EventId,
    EndpointId,
    EventType,
    IdempotencyToken,
    Status,
    Attempts,
    NextAttemptAt,
    LockedUntil,
    LastAttemptAt,
    LastResponseCode,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Attempts {
    Table,
    Id,
    DeliveryId,
    TenantId,
    EndpointId,
    Attempt,
    StartedAt,
    DurationMicros,
    StatusCode,
    Succeeded,
    ErrorKind,
    ErrorMessage,
    ResponseBody,
}

fn tenant_fk<T: IntoIden + 'static>(table: T, column: T) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, column)
        .to(Tenants::Table, Tenants::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(
                        ColumnDef::new(Tenants::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Tenants::Name).string().not_null())
                    .col(ColumnDef::new(Tenants::SigningKey).string().not_null())
                    .col(ColumnDef::new(Tenants::PublicKey).string().not_null())
                    .col(ColumnDef::new(Tenants::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(
                        ColumnDef::new(ApiKeys::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ApiKeys::TenantId).string().null())
                    .col(ColumnDef::new(ApiKeys::Role).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Name).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Prefix).string().not_null())
                    .col(ColumnDef::new(ApiKeys::KeyHash).string().not_null())
                    .col(ColumnDef::new(ApiKeys::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(ApiKeys::RevokedAt).big_integer().null())
                    .foreign_key(&mut tenant_fk(ApiKeys::Table, ApiKeys::TenantId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_keys_key_hash")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::KeyHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_keys_tenant")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::TenantId)
                    .col(ApiKeys::Id)
                    .to_owned(),
            )
            .await?;

        // One row per named counter. The publish transaction increments `events` first:
        // the row lock it takes serialises writers, so events commit in `seq` order and
        // a tail reading `seq > cursor` can never skip an event that commits late.
        manager
            .create_table(
                Table::create()
                    .table(Sequences::Table)
                    .col(
                        ColumnDef::new(Sequences::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Sequences::Value).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(Sequences::Table)
                    .columns([Sequences::Name, Sequences::Value])
                    .values_panic(["events".into(), 0i64.into()])
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(
                        ColumnDef::new(Events::Seq)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Events::Id).string().not_null().unique_key())
                    .col(ColumnDef::new(Events::TenantId).string().not_null())
                    .col(ColumnDef::new(Events::EventType).string().not_null())
                    .col(ColumnDef::new(Events::Environment).string().not_null())
                    .col(ColumnDef::new(Events::OccurredAt).big_integer().not_null())
                    .col(ColumnDef::new(Events::ReceivedAt).big_integer().not_null())
                    .col(ColumnDef::new(Events::Payload).text().not_null())
                    .col(ColumnDef::new(Events::IdempotencyKey).string().null())
                    .foreign_key(&mut tenant_fk(Events::Table, Events::TenantId))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("events_tenant_seq", vec![Events::TenantId, Events::Seq]),
            (
                "events_tenant_idempotency",
                vec![Events::TenantId, Events::IdempotencyKey],
            ),
            ("events_received_at", vec![Events::ReceivedAt]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Events::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Endpoints::Table)
                    .col(
                        ColumnDef::new(Endpoints::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Endpoints::TenantId).string().not_null())
                    .col(ColumnDef::new(Endpoints::Url).text().not_null())
                    .col(ColumnDef::new(Endpoints::Filters).text().not_null())
                    .col(ColumnDef::new(Endpoints::Enabled).boolean().not_null())
                    .col(ColumnDef::new(Endpoints::DisabledReason).text().not_null())
                    .col(ColumnDef::new(Endpoints::Description).text().not_null())
                    .col(ColumnDef::new(Endpoints::Metadata).text().not_null())
                    .col(ColumnDef::new(Endpoints::Environment).string().not_null())
                    .col(ColumnDef::new(Endpoints::Format).string().not_null())
                    .col(ColumnDef::new(Endpoints::Schemes).string().not_null())
                    .col(
                        ColumnDef::new(Endpoints::KeygenAlgorithm)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Endpoints::Secret).string().not_null())
                    .col(ColumnDef::new(Endpoints::PreviousSecret).string().null())
                    .col(
                        ColumnDef::new(Endpoints::PreviousSecretExpiresAt)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(Endpoints::RetrySchedule).text().not_null())
                    .col(ColumnDef::new(Endpoints::FailingSince).big_integer().null())
                    .col(
                        ColumnDef::new(Endpoints::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Endpoints::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(&mut tenant_fk(Endpoints::Table, Endpoints::TenantId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("endpoints_tenant")
                    .table(Endpoints::Table)
                    .col(Endpoints::TenantId)
                    .col(Endpoints::Id)
                    .to_owned(),
            )
            .await?;

        // The outbox: one row per (event, endpoint), written in the publish transaction.
        manager
            .create_table(
                Table::create()
                    .table(Deliveries::Table)
                    .col(
                        ColumnDef::new(Deliveries::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Deliveries::TenantId).string().not_null())
                    .col(ColumnDef::new(Deliveries::EventId).string().not_null())
                    .col(ColumnDef::new(Deliveries::EndpointId).string().not_null())
                    .col(ColumnDef::new(Deliveries::EventType).string().not_null())
                    .col(
                        ColumnDef::new(Deliveries::IdempotencyToken)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Deliveries::Status).string().not_null())
                    .col(ColumnDef::new(Deliveries::Attempts).integer().not_null())
                    .col(
                        ColumnDef::new(Deliveries::NextAttemptAt)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(Deliveries::LockedUntil).big_integer().null())
                    .col(
                        ColumnDef::new(Deliveries::LastAttemptAt)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Deliveries::LastResponseCode)
                            .integer()
                            .null(),
                    )
                    .col(ColumnDef::new(Deliveries::LastError).text().null())
                    .col(
                        ColumnDef::new(Deliveries::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Deliveries::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(&mut tenant_fk(Deliveries::Table, Deliveries::TenantId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Deliveries::Table, Deliveries::EventId)
                            .to(Events::Table, Events::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Deliveries::Table, Deliveries::EndpointId)
                            .to(Endpoints::Table, Endpoints::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "deliveries_due",
                vec![Deliveries::Status, Deliveries::NextAttemptAt],
            ),
            (
                "deliveries_endpoint",
                vec![Deliveries::EndpointId, Deliveries::Id],
            ),
            ("deliveries_event", vec![Deliveries::EventId]),
            (
                "deliveries_endpoint_event",
                vec![Deliveries::EndpointId, Deliveries::EventType],
            ),
            (
                "deliveries_tenant",
                vec![Deliveries::TenantId, Deliveries::Id],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Deliveries::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }

        // The delivery log: one row per HTTP attempt.
        manager
            .create_table(
                Table::create()
                    .table(Attempts::Table)
                    .col(
                        ColumnDef::new(Attempts::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Attempts::DeliveryId).string().not_null())
                    .col(ColumnDef::new(Attempts::TenantId).string().not_null())
                    .col(ColumnDef::new(Attempts::EndpointId).string().not_null())
                    .col(ColumnDef::new(Attempts::Attempt).integer().not_null())
                    .col(ColumnDef::new(Attempts::StartedAt).big_integer().not_null())
                    .col(
                        ColumnDef::new(Attempts::DurationMicros)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Attempts::StatusCode).integer().null())
                    .col(ColumnDef::new(Attempts::Succeeded).boolean().not_null())
                    .col(ColumnDef::new(Attempts::ErrorKind).string().null())
                    .col(ColumnDef::new(Attempts::ErrorMessage).text().null())
                    .col(ColumnDef::new(Attempts::ResponseBody).text().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Attempts::Table, Attempts::DeliveryId)
                            .to(Deliveries::Table, Deliveries::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("attempts_delivery")
                    .table(Attempts::Table)
                    .col(Attempts::DeliveryId)
                    .col(Attempts::Attempt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Attempts::Table.into_iden(),
            Deliveries::Table.into_iden(),
            Endpoints::Table.into_iden(),
            Events::Table.into_iden(),
            Sequences::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
