//! Token signing keys kept in the store, shared by every node.

use sqlx::Row;

use super::Store;

/// Id of the key generated on first start when none is configured.
pub const GENERATED_KID: &str = "k1";

impl Store {
    /// Adds a new signing key, which signs from now on; older keys keep verifying.
    pub async fn rotate_signing_key(&self) -> Result<String, sqlx::Error> {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
        let now = crate::domain::now_millis();
        let kid = format!("k{now}");
        sqlx::query("INSERT INTO signing_keys (kid, secret, created_at) VALUES ($1, $2, $3)")
            .bind(&kid)
            .bind(hex::encode(secret))
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(kid)
    }

    /// Key ids and their creation times, oldest first (never the secrets).
    pub async fn signing_key_ids(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query("SELECT kid, created_at FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get("kid")?, r.try_get("created_at")?))).collect()
    }

    /// Returns every stored key, oldest first, generating the first one if there is none. Two
    /// nodes starting together race on one fixed id, so both end up with the same key.
    pub async fn signing_keys(&self) -> Result<Vec<(String, Vec<u8>)>, sqlx::Error> {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
        sqlx::query(
            "INSERT INTO signing_keys (kid, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (kid) DO NOTHING",
        )
        .bind(GENERATED_KID)
        .bind(hex::encode(secret))
        .bind(crate::domain::now_millis())
        .execute(self.pool())
        .await?;
        let rows =
            sqlx::query("SELECT kid, secret FROM signing_keys ORDER BY created_at, kid").fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let kid: String = row.try_get("kid")?;
                let secret: String = row.try_get("secret")?;
                let bytes = hex::decode(&secret).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                Ok((kid, bytes))
            })
            .collect()
    }
}
