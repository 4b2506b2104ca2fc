//! JSON Web Tokens: auth signs them, the gateway (and any service that needs the user)
//! verifies them. One algorithm (HS256) is fixed on both sides, so a token cannot pick
//! its own (`alg: none`, or an RSA public key used as an HMAC secret); the expiry is
//! always checked.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The environment variable that carries the shared signing secret.
pub const SECRET_ENV: &str = "SHOP_JWT_SECRET";
pub const ISSUER: &str = "shop-auth";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user name.
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{SECRET_ENV} is not set: the shop needs a shared secret to sign and verify tokens")]
    Missing,
    #[error("{SECRET_ENV} is too short: use at least 32 bytes")]
    TooShort,
}

/// Reads the shared secret from [`SECRET_ENV`].
pub fn secret_from_env() -> Result<Vec<u8>, SecretError> {
    let secret = std::env::var(SECRET_ENV).map_err(|_| SecretError::Missing)?;
    if secret.len() < 32 {
        return Err(SecretError::TooShort);
    }
    Ok(secret.into_bytes())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

pub struct Signer {
    key: EncodingKey,
    ttl: Duration,
}

impl Signer {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn sign(&self, user: &str) -> String {
        let iat = now_secs();
        let claims = Claims {
            sub: user.to_owned(),
            iat,
            exp: iat + self.ttl.as_secs(),
            iss: ISSUER.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .expect("HS256 signing with a byte secret cannot fail")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
}

impl TokenError {
    pub fn as_label(self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::Expired => "expired",
            TokenError::Invalid => "invalid",
        }
    }
}

#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// Verifies the bearer token of an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&http::HeaderValue>) -> Result<Claims, TokenError> {
        let value = header
            .and_then(|v| v.to_str().ok())
            .ok_or(TokenError::Missing)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(TokenError::Missing)?;
        self.verify(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn a_signed_token_verifies() {
        let token = Signer::new(SECRET, Duration::from_secs(60)).sign("user7");
        let claims = Verifier::new(SECRET).verify(&token).unwrap();
        assert_eq!(claims.sub, "user7");
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let token =
            Signer::new(b"another-secret-another-secret-xx", Duration::from_secs(60)).sign("user7");
        assert_eq!(
            Verifier::new(SECRET).verify(&token),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let key = EncodingKey::from_secret(SECRET);
        let now = now_secs();
        let claims = Claims {
            sub: "user1".into(),
            iat: now - 120,
            exp: now - 1,
            iss: ISSUER.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        assert_eq!(
            Verifier::new(SECRET).verify(&token),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let now = now_secs();
        let payload = format!(
            r#"{{"sub":"user1","iat":{now},"exp":{},"iss":"{ISSUER}"}}"#,
            now + 60
        );
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&payload)
        );
        assert_eq!(
            Verifier::new(SECRET).verify(&none),
            Err(TokenError::Invalid)
        );
        let key = EncodingKey::from_secret(SECRET);
        let claims: Claims = serde_json::from_str(&payload).unwrap();
        let hs512 = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &key).unwrap();
        assert_eq!(
            Verifier::new(SECRET).verify(&hs512),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn the_header_needs_the_bearer_scheme() {
        let v = Verifier::new(SECRET);
        assert_eq!(v.verify_header(None), Err(TokenError::Missing));
        let basic = http::HeaderValue::from_static("Basic dXNlcjpwYXNz");
        assert_eq!(v.verify_header(Some(&basic)), Err(TokenError::Missing));
    }
}
