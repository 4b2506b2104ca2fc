//! `shop auth`: logs users in and signs their tokens.
//!
//! The user store is seeded with `user1` ... `userN`, password `pass1` ... `passN`.
//! Passwords are kept only as salted PBKDF2-HMAC-SHA256 hashes and compared in constant
//! time.
//!
//! API: `POST /api/v1/auth/login` `{"username","password"}` -> `{"token","expires_in"}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::args::{CommonArgs, duration};
use crate::error::error;
use crate::jwt::{self, Signer};
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of seeded users (user1 ... userN).
    #[arg(long, env = "SHOP_USERS", default_value_t = 1000)]
    pub users: u32,
    /// PBKDF2 iterations per password hash. Real systems use far more (OWASP: 600,000);
    /// the shop keeps it low because it is a load-test target and logins are frequent.
    #[arg(long, env = "SHOP_HASH_ITERATIONS", default_value_t = 1000)]
    pub hash_iterations: u32,
    /// Lifetime of a signed token.
    #[arg(long, env = "SHOP_TOKEN_TTL", default_value = "1h", value_parser = duration)]
    pub token_ttl: Duration,
}

struct PasswordHash {
    salt: [u8; 16],
    hash: [u8; 32],
}

/// Users by name, with their salted password hashes.
pub struct UserStore {
    users: HashMap<String, PasswordHash>,
    iterations: u32,
}

fn hash(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<sha2::Sha256, 32>(password.as_bytes(), salt, iterations)
}

impl UserStore {
    /// Seeds `user1..=userN` with `pass1..=passN`, each with its own random salt.
    pub fn seed(count: u32, iterations: u32) -> Self {
        let mut rng = fastrand::Rng::new();
        let users = (1..=count)
            .map(|i| {
                let mut salt = [0u8; 16];
                rng.fill(&mut salt);
                let hash = hash(&format!("pass{i}"), &salt, iterations);
                (format!("user{i}"), PasswordHash { salt, hash })
            })
            .collect();
        Self { users, iterations }
    }

    pub fn check(&self, username: &str, password: &str) -> bool {
        match self.users.get(username) {
            Some(h) => bool::from(hash(password, &h.salt, self.iterations).ct_eq(&h.hash)),
            None => {
                // Spend the same time on unknown users, so timing does not tell which
                // user names exist.
                let _ = hash(password, &[0u8; 16], self.iterations);
                false
            }
        }
    }
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

struct AppState {
    users: UserStore,
    signer: Signer,
    logins: Family<ResultLabels, Counter>,
}

async fn login(
    State(s): State<Arc<AppState>>,
    body: Result<Json<Login>, JsonRejection>,
) -> Response {
    let Json(login) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected a JSON body {{\"username\", \"password\"}}: {}",
                    e.body_text()
                ),
            );
        }
    };
    let state = s.clone();
    let ok = tokio::task::spawn_blocking(move || {
        state
            .users
            .check(&login.username, &login.password)
            .then_some(login.username)
    })
    .await
    .ok()
    .flatten();
    match ok {
        Some(user) => {
            s.logins
                .get_or_create(&ResultLabels { result: "success" })
                .inc();
            let token = s.signer.sign(&user);
            Json(json!({ "token": token, "expires_in": s.signer.ttl().as_secs() })).into_response()
        }
        None => {
            s.logins
                .get_or_create(&ResultLabels { result: "failure" })
                .inc();
            error(StatusCode::UNAUTHORIZED, "invalid username or password")
        }
    }
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let secret = jwt::secret_from_env()?;
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let logins = Family::<ResultLabels, Counter>::default();
    registry.register("auth_logins", "Login attempts, by result", logins.clone());
    let (users, iterations) = (args.users, args.hash_iterations);
    let users = tokio::task::spawn_blocking(move || UserStore::seed(users, iterations)).await?;
    let state = Arc::new(AppState {
        users,
        signer: Signer::new(&secret, args.token_ttl),
        logins,
    });
    let router = Router::new()
        .route("/api/v1/auth/login", post(login))
        .fallback(server::not_found)
        .with_state(state);
    let service = Service {
        name: "auth",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    server::serve(args.common.listen, service, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_users_log_in_with_their_own_password_only() {
        let store = UserStore::seed(20, 10);
        assert!(store.check("user1", "pass1"));
        assert!(store.check("user20", "pass20"));
        assert!(!store.check("user1", "pass2"));
        assert!(!store.check("user21", "pass21"));
        assert!(!store.check("", ""));
    }

    #[test]
    fn the_same_password_hashes_differently_per_salt() {
        let store = UserStore::seed(2, 10);
        let a = &store.users["user1"];
        let b = &store.users["user2"];
        assert_ne!(a.salt, b.salt);
        assert_ne!(hash("same", &a.salt, 10), hash("same", &b.salt, 10));
    }
}
