//! Who is calling, and what they may do.
//!
//! Every RPC but health carries `authorization: Bearer <key>`. A key is either an
//! admin key (every tenant) or belongs to one tenant with one role. Handlers ask the
//! `Principal` for the tenant they may act on; that one check is what keeps tenants
//! apart, so no handler reads a tenant id from a request without it.

use tonic::metadata::MetadataMap;

use crate::{
    error::{Error, Result},
    proto,
    store::Store,
};

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Publisher,
    Subscriber,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
            Role::Manager => "manager",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "publisher" => Role::Publisher,
            "subscriber" => Role::Subscriber,
            "manager" => Role::Manager,
            _ => return None,
        })
    }

    pub fn from_proto(value: i32) -> Option<Role> {
        Some(match proto::Role::try_from(value).ok()? {
            proto::Role::Admin => Role::Admin,
            proto::Role::Publisher => Role::Publisher,
            proto::Role::Subscriber => Role::Subscriber,
            proto::Role::Manager => Role::Manager,
            proto::Role::Unspecified => return None,
        })
    }

    pub fn to_proto(self) -> proto::Role {
        match self {
            Role::Admin => proto::Role::Admin,
            Role::Publisher => proto::Role::Publisher,
            Role::Subscriber => proto::Role::Subscriber,
            Role::Manager => proto::Role::Manager,
        }
    }
}

/// What a handler needs to do on a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Publish,
    Read,
    Manage,
}

impl Access {
    fn allowed(self, role: Role) -> bool {
        match self {
            Access::Publish => matches!(role, Role::Admin | Role::Publisher),
            Access::Read => matches!(role, Role::Admin | Role::Subscriber | Role::Manager),
            Access::Manage => matches!(role, Role::Admin | Role::Manager),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Access::Publish => "publish events",
            Access::Read => "read events",
            Access::Manage => "manage endpoints",
        }
    }
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key_id: String,
    /// `None` for admin keys.
    pub tenant_id: Option<String>,
    pub role: Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> Result<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::PermissionDenied(
                "this call needs an admin key".into(),
            ))
        }
    }

    /// The tenant this call acts on: the request's `tenant_id` for admin keys (where it
    /// is required), the key's own tenant otherwise (where the request may repeat it
    /// but never name another).
    pub fn tenant_for(&self, requested: &str, access: Access) -> Result<String> {
        if !access.allowed(self.role) {
            return Err(Error::PermissionDenied(format!(
                "a {} key may not {}",
                self.role.as_str(),
                access.verb()
            )));
        }
        match &self.tenant_id {
            None => {
                if requested.is_empty() {
                    Err(Error::invalid("tenant_id", "is required with an admin key"))
                } else {
                    Ok(requested.to_string())
                }
            }
            Some(own) if requested.is_empty() || requested == own => Ok(own.clone()),
            Some(_) => Err(Error::PermissionDenied(
                "tenant_id: this key belongs to another tenant".into(),
            )),
        }
    }
}

/// The secret of `authorization: Bearer <key>`.
pub fn bearer_secret(metadata: &MetadataMap) -> Result<&str> {
    let value = metadata.get("authorization").ok_or_else(|| {
        Error::Unauthenticated("missing `authorization: Bearer <key>` metadata".into())
    })?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("authorization metadata is not text".into()))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::Unauthenticated("authorization metadata must be `Bearer <key>`".into())
        })
}

/// The principal of the active key whose secret hashes to `key_hash`.
pub async fn principal_for(store: &Store, key_hash: &str) -> Result<Principal> {
    let key = store
        .find_active_key_by_hash(key_hash)
        .await?
        .ok_or_else(|| Error::Unauthenticated("unknown or revoked API key".into()))?;
    let role = Role::parse(&key.role)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("key {} has role {}", key.id, key.role)))?;
    Ok(Principal {
        key_id: key.id,
        tenant_id: key.tenant_id,
        role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: Option<&str>, role: Role) -> Principal {
        Principal {
            key_id: "key_x".into(),
            tenant_id: tenant.map(str::to_string),
            role,
        }
    }

    #[test]
    fn tenant_scoping() {
        let admin = key(None, Role::Admin);
        assert_eq!(admin.tenant_for("t1", Access::Manage).unwrap(), "t1");
        assert!(admin.tenant_for("", Access::Read).is_err());

        let publisher = key(Some("t1"), Role::Publisher);
        assert_eq!(publisher.tenant_for("", Access::Publish).unwrap(), "t1");
        assert_eq!(publisher.tenant_for("t1", Access::Publish).unwrap(), "t1");
        assert!(matches!(
            publisher.tenant_for("t2", Access::Publish),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            publisher.tenant_for("", Access::Read),
            Err(Error::PermissionDenied(_))
        ));

        let manager = key(Some("t1"), Role::Manager);
        assert!(manager.tenant_for("", Access::Read).is_ok());
        assert!(manager.tenant_for("", Access::Publish).is_err());
        let subscriber = key(Some("t1"), Role::Subscriber);
        assert!(subscriber.tenant_for("", Access::Manage).is_err());
    }
}
