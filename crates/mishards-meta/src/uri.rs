//! Metadata database URIs in the three spellings operators bring along:
//! sqlx (`mysql://…`, `sqlite://…`), SQLAlchemy as Mishards used it (`mysql+pymysql://…?charset=utf8mb4`,
//! `sqlite:////abs/path/meta.sqlite`) and Milvus's `backend_url` (`sqlite://:@:/` = `meta.sqlite` in the
//! node's storage folder).

use std::fmt;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

use super::MetaError;

/// Default MySQL port when a URI names none.
const MYSQL_DEFAULT_PORT: u16 = 3306;
/// File name Milvus gives its SQLite metadata inside the storage folder.
pub const SQLITE_FILE_NAME: &str = "meta.sqlite";

/// A parsed metadata URI. `Display` masks the password, so it is safe to log and print.
#[derive(Clone, PartialEq, Eq)]
pub enum MetaUri {
    MySql(MySqlTarget),
    Sqlite(SqliteTarget),
}

#[derive(Clone, PartialEq, Eq)]
pub struct MySqlTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub charset: Option<String>,
    /// Socket path from `?unix_socket=` (SQLAlchemy/pymysql) or `?socket=` (sqlx).
    pub socket: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqliteTarget {
    File(PathBuf),
    Memory,
}

impl MetaUri {
    /// Parses `uri`. `storage_dir` is where `sqlite://:@:/` (Milvus's "the default SQLite") puts its file;
    /// without one that spelling is an error.
    pub fn parse(uri: &str, storage_dir: Option<&Path>) -> Result<MetaUri, MetaError> {
        let invalid = |reason: String| MetaError::InvalidUri {
            uri: mask_password(uri),
            reason,
        };
        let trimmed = uri.trim();
        let (scheme, rest) = trimmed
            .split_once("://")
            .or_else(|| trimmed.split_once(':').filter(|(s, _)| *s == "sqlite"))
            .ok_or_else(|| {
                invalid(
                    "expected `mysql://user:password@host:port/database` or `sqlite://path`".into(),
                )
            })?;
        // SQLAlchemy names the driver after a `+` (mysql+pymysql, mysql+mysqldb, sqlite+pysqlite).
        let dialect = scheme
            .split('+')
            .next()
            .unwrap_or(scheme)
            .to_ascii_lowercase();
        match dialect.as_str() {
            "mysql" | "mariadb" => parse_mysql(trimmed).map(MetaUri::MySql).map_err(invalid),
            "sqlite" => parse_sqlite(rest, storage_dir)
                .map(MetaUri::Sqlite)
                .map_err(invalid),
            other => Err(invalid(format!(
                "unsupported database `{other}`; use mysql or sqlite"
            ))),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, MetaUri::Sqlite(_))
    }
}

fn parse_mysql(uri: &str) -> Result<MySqlTarget, String> {
    // `url` cannot parse `mysql+pymysql` hosts any differently from `mysql`, so normalise the scheme.
    let normalised = match uri.split_once("://") {
        Some((_, rest)) => format!(
            "mysql://{}",
            encode_user_info(rest).unwrap_or_else(|| rest.to_string())
        ),
        None => uri.to_string(),
    };
    let url = url::Url::parse(&normalised).map_err(|e| e.to_string())?;
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("no host given")?;
    let database = url.path().trim_start_matches('/');
    if database.is_empty() {
        return Err("no database name given (…/database at the end)".into());
    }
    if database.contains('/') {
        return Err(format!("`{database}` is not a database name"));
    }
    let user = decode(url.username());
    if user.is_empty() {
        return Err("no user given (user[:password]@host)".into());
    }
    let mut target = MySqlTarget {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: url.port().unwrap_or(MYSQL_DEFAULT_PORT),
        user,
        password: url.password().map(decode).filter(|p| !p.is_empty()),
        database: decode(database),
        charset: None,
        socket: None,
    };
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "charset" => target.charset = Some(value.into_owned()),
            "unix_socket" | "socket" => target.socket = Some(value.into_owned()),
            other => {
                tracing::warn!(
                    parameter = other,
                    "ignoring metadata URI parameter this client does not use"
                )
            }
        }
    }
    Ok(target)
}

fn parse_sqlite(rest: &str, storage_dir: Option<&Path>) -> Result<SqliteTarget, String> {
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(SqliteTarget::Memory);
    }
    // Milvus's backend_url for its built-in SQLite: `sqlite://:@:/` (empty user, password, host, port).
    if path.starts_with(":@:") {
        let dir = storage_dir
            .ok_or("`sqlite://:@:/` means meta.sqlite in the node's storage folder, and this process has none")?;
        return Ok(SqliteTarget::File(dir.join(SQLITE_FILE_NAME)));
    }
    // `sqlite:////abs` (SQLAlchemy) and `sqlite:///abs` (sqlx) are absolute; `sqlite://rel` is relative.
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let path = if let Some(abs) = decoded.strip_prefix("//") {
        format!("/{}", abs.trim_start_matches('/'))
    } else {
        decoded.into_owned()
    };
    Ok(SqliteTarget::File(PathBuf::from(path)))
}

/// Replaces the password in a URI-looking string with `***`; anything else comes back unchanged.
/// The credentials end at the last `@` (a host never holds one), so a password with `/`, `@` or `:` in
/// it, encoded or not, is masked whole.
pub fn mask_password(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let Some((credentials, location)) = rest.rsplit_once('@') else {
        return uri.to_string();
    };
    match credentials.split_once(':') {
        Some((user, password)) if !password.is_empty() => {
            format!("{scheme}://{user}:***@{location}")
        }
        _ => uri.to_string(),
    }
}

/// Percent-encodes what a password may hold that would end the URI's user-info part early (`/`, `@`,
/// `:`, `?`, `#`, …), keeping `%XX` escapes as they are: `user:p@ss/w@host` reads as the user `user`
/// with the password `p@ss/w`, as an operator who did not encode it meant.
fn encode_user_info(rest: &str) -> Option<String> {
    let (credentials, location) = rest.rsplit_once('@')?;
    let (user, password) = credentials.split_once(':')?;
    let mut encoded = String::with_capacity(password.len());
    for c in password.chars() {
        match c {
            c if c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=".contains(c) => encoded.push(c),
            c => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    encoded.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    Some(format!("{user}:{encoded}@{location}"))
}

/// A metadata URI as the operator gave it (text), whose `Debug` and `Display` mask the password: what a
/// config holds, so printing or logging the config never shows the secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretUri(String);

impl SecretUri {
    pub fn new(text: impl Into<String>) -> Self {
        SecretUri(text.into())
    }

    /// The URI with its password: for connecting, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretUri {
    fn from(text: String) -> Self {
        SecretUri(text)
    }
}

impl From<&str> for SecretUri {
    fn from(text: &str) -> Self {
        SecretUri(text.to_string())
    }
}

impl fmt::Display for SecretUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_password(&self.0))
    }
}

impl fmt::Debug for SecretUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&mask_password(&self.0), f)
    }
}

impl fmt::Display for MetaUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaUri::MySql(t) => {
                let password = if t.password.is_some() { ":***" } else { "" };
                write!(
                    f,
                    "mysql://{}{}@{}:{}/{}",
                    t.user, password, t.host, t.port, t.database
                )
            }
            MetaUri::Sqlite(SqliteTarget::Memory) => f.write_str("sqlite::memory:"),
            MetaUri::Sqlite(SqliteTarget::File(path)) => write!(f, "sqlite://{}", path.display()),
        }
    }
}

impl fmt::Debug for MetaUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for MySqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&MetaUri::MySql(self.clone()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mysql(uri: &str) -> MySqlTarget {
        match MetaUri::parse(uri, None).unwrap() {
            MetaUri::MySql(t) => t,
            other => panic!("expected mysql, got {other}"),
        }
    }

    fn sqlite(uri: &str, dir: Option<&Path>) -> SqliteTarget {
        match MetaUri::parse(uri, dir).unwrap() {
            MetaUri::Sqlite(t) => t,
            other => panic!("expected sqlite, got {other}"),
        }
    }

    #[test]
    fn sqlalchemy_mysql_with_driver_and_charset() {
        let t = mysql("mysql+pymysql://root:pw%40x@db.example:3307/milvus?charset=utf8mb4");
        assert_eq!(t.host, "db.example");
        assert_eq!(t.port, 3307);
        assert_eq!(t.user, "root");
        assert_eq!(t.password.as_deref(), Some("pw@x"));
        assert_eq!(t.database, "milvus");
        assert_eq!(t.charset.as_deref(), Some("utf8mb4"));
    }

    #[test]
    fn sqlx_and_backend_url_mysql() {
        let t = mysql("mysql://root:@127.0.0.1/test");
        assert_eq!((t.port, t.password), (3306, None));
        let t = mysql("mysql://root:123456@192.168.1.85:3306/milvus");
        assert_eq!(t.password.as_deref(), Some("123456"));
    }

    #[test]
    fn sqlite_spellings() {
        assert_eq!(
            sqlite("sqlite:////abs/path/meta.sqlite", None),
            SqliteTarget::File("/abs/path/meta.sqlite".into())
        );
        assert_eq!(
            sqlite("sqlite:///abs/meta.db", None),
            SqliteTarget::File("/abs/meta.db".into())
        );
        assert_eq!(
            sqlite("sqlite://rel/meta.db", None),
            SqliteTarget::File("rel/meta.db".into())
        );
        assert_eq!(sqlite("sqlite::memory:", None), SqliteTarget::Memory);
        assert_eq!(
            sqlite("sqlite://:@:/", Some(Path::new("/data"))),
            SqliteTarget::File("/data/meta.sqlite".into())
        );
    }

    #[test]
    fn bad_uris_name_the_uri_with_password_masked() {
        for uri in [
            "postgres://u:secret@h/db",
            "mysql://u:secret@h",
            "mysql://u:secret@/db",
            "nonsense",
            "sqlite://:@:/",
        ] {
            let err = MetaUri::parse(uri, None).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
            assert!(err.contains(&mask_password(uri)), "{err}");
        }
    }

    #[test]
    fn passwords_with_slash_at_and_colon_parse_and_never_show() {
        for (uri, password) in [
            ("mysql://user:p%40ss:w/rd@host/db", "p@ss:w/rd"),
            (
                "mysql+pymysql://user:p@ss:w/rd@host:3307/db?charset=utf8mb4",
                "p@ss:w/rd",
            ),
            ("mysql://user:a#b?c@host/db", "a#b?c"),
        ] {
            let t = mysql(uri);
            assert_eq!(t.password.as_deref(), Some(password), "{uri}");
            assert_eq!(
                (t.user.as_str(), t.host.as_str()),
                ("user", "host"),
                "{uri}"
            );
            assert_eq!(t.database, "db", "{uri}");
            let parsed = MetaUri::MySql(t);
            let secret = SecretUri::new(uri);
            for shown in [
                format!("{parsed}"),
                format!("{parsed:?}"),
                format!("{secret}"),
                format!("{secret:?}"),
                mask_password(uri),
            ] {
                assert!(!shown.contains(password), "{shown}");
                assert!(!shown.contains("ss:w"), "{shown}");
                assert!(!shown.contains("rd@"), "{shown}");
                assert!(shown.contains("user:***@host"), "{shown}");
            }
            assert_eq!(secret.expose(), uri);
        }
        // A bad URI with such a password: its error masks it too.
        let err = MetaUri::parse("mysql://user:p@ss:w/rd@/db", None)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("ss:w"), "{err}");
    }

    #[test]
    fn display_masks_password() {
        let uri = MetaUri::parse("mysql://root:hunter2@h:1/db", None).unwrap();
        assert_eq!(uri.to_string(), "mysql://root:***@h:1/db");
        assert_eq!(mask_password("mysql://a:b@c/d"), "mysql://a:***@c/d");
        assert_eq!(mask_password("mysql://a@c/d"), "mysql://a@c/d");
    }
}
