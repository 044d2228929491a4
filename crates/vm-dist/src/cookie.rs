//! The magic cookie: the only authentication distribution has.
//!
//! Read as `erl` reads it: `$HOME/.erlang.cookie` (then
//! `$XDG_CONFIG_HOME/erlang/.erlang.cookie` when only that exists), the text up to the
//! first whitespace, the file refused unless only its owner can read it. When neither
//! exists one is created in `$HOME` as `erl` does: 20 random capital letters, mode 0400.
//! Any cookie can be given instead ([`Cookie::new`]; the node's `cookie=` setting and
//! `BEAMVM_COOKIE`).
//!
//! The handshake's digest is MD5 of the cookie followed by the challenge in decimal
//! ([`Cookie::digest`]), as dist_util:gen_digest/2 computes it.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

/// A cookie. Its `Debug` form does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie(String);

/// Why no cookie could be read or created.
#[derive(Debug)]
pub enum CookieError {
    /// Reading or creating the file failed.
    Io(PathBuf, io::Error),
    /// Others than the owner can read the file; erl refuses it too.
    Permissions(PathBuf),
    /// The file holds no cookie.
    Empty(PathBuf),
    /// No home directory to look in.
    NoHome,
}

impl fmt::Display for CookieError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CookieError::Io(p, e) => write!(f, "cookie file {}: {e}", p.display()),
            CookieError::Permissions(p) => write!(
                f,
                "cookie file {} must be accessible by owner only (chmod 400 it)",
                p.display()
            ),
            CookieError::Empty(p) => write!(f, "cookie file {} is empty", p.display()),
            CookieError::NoHome => {
                write!(
                    f,
                    "HOME is not set: give the cookie explicitly (cookie=...)"
                )
            }
        }
    }
}

impl std::error::Error for CookieError {}

/// Length of a cookie erl creates.
const GENERATED_LEN: usize = 20;

impl Cookie {
    /// A cookie with this text.
    pub fn new(text: &str) -> Self {
        Cookie(text.to_owned())
    }

    /// The cookie's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The user's cookie, found or created as `erl` does.
    pub fn from_home() -> Result<Cookie, CookieError> {
        let home = std::env::var_os("HOME").ok_or(CookieError::NoHome)?;
        let xdg = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(&home).join(".config"));
        Cookie::find_or_create(Path::new(&home), &xdg)
    }

    /// The cookie in `home/.erlang.cookie`, or else `xdg_config/erlang/.erlang.cookie`,
    /// or a new one written to `home/.erlang.cookie` with mode 0400.
    pub fn find_or_create(home: &Path, xdg_config: &Path) -> Result<Cookie, CookieError> {
        let main = home.join(".erlang.cookie");
        let xdg = xdg_config.join("erlang").join(".erlang.cookie");
        if main.exists() {
            return Cookie::read(&main);
        }
        if xdg.exists() {
            return Cookie::read(&xdg);
        }
        Cookie::create(&main)
    }

    /// Reads a cookie file, checking its permissions as erl does.
    pub fn read(path: &Path) -> Result<Cookie, CookieError> {
        let io_err = |e| CookieError::Io(path.to_owned(), e);
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if !meta.is_file() {
            return Err(CookieError::Io(
                path.to_owned(),
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(CookieError::Permissions(path.to_owned()));
            }
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(io_err)?;
        let cookie: &str = text.split([' ', '\t', '\r', '\n']).next().unwrap_or("");
        if cookie.is_empty() {
            return Err(CookieError::Empty(path.to_owned()));
        }
        Ok(Cookie::new(cookie))
    }

    fn create(path: &Path) -> Result<Cookie, CookieError> {
        let io_err = |e| CookieError::Io(path.to_owned(), e);
        let mut seed = crate::random::u64();
        let text: String = (0..GENERATED_LEN)
            .map(|_| {
                if seed < 26 {
                    seed = crate::random::u64();
                }
                let c = char::from(b'A' + (seed % 26) as u8);
                seed /= 26;
                c
            })
            .collect();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o400);
        }
        let mut file = opts.open(path).map_err(io_err)?;
        file.write_all(text.as_bytes()).map_err(io_err)?;
        Ok(Cookie(text))
    }

    /// MD5(cookie ++ decimal challenge): the handshake's proof of knowing the cookie.
    pub fn digest(&self, challenge: u32) -> [u8; 16] {
        let mut h = Md5::new();
        // erl hashes atom_to_list(Cookie): one byte per character for Latin-1 text.
        if self.0.chars().all(|c| u32::from(c) <= 0xff) {
            let bytes: Vec<u8> = self.0.chars().map(|c| u32::from(c) as u8).collect();
            h.update(&bytes);
        } else {
            h.update(self.0.as_bytes());
        }
        h.update(challenge.to_string().as_bytes());
        h.finalize().into()
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "vm-dist-cookie-{tag}-{}-{}",
            std::process::id(),
            crate::random::u64()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn digest_matches_erlang_md5_of_cookie_and_decimal_challenge() {
        // erlang:md5(["monster" | integer_to_list(3735928559)]) in erl 25.
        let expected = [
            191, 127, 136, 240, 81, 247, 240, 82, 147, 153, 153, 79, 85, 18, 217, 156,
        ];
        assert_eq!(Cookie::new("monster").digest(3_735_928_559), expected);
        assert_ne!(Cookie::new("monstes").digest(3_735_928_559), expected);
    }

    #[cfg(unix)]
    #[test]
    fn a_missing_cookie_is_created_owner_read_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let home = temp_dir("create");
        let c = Cookie::find_or_create(&home, &home.join("xdg")).unwrap();
        assert_eq!(c.as_str().len(), 20);
        assert!(c.as_str().chars().all(|ch| ch.is_ascii_uppercase()));
        let path = home.join(".erlang.cookie");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        assert_eq!(Cookie::find_or_create(&home, &home.join("xdg")).unwrap(), c);
        std::fs::remove_dir_all(&home).ok();
    }

    #[cfg(unix)]
    #[test]
    fn a_cookie_readable_by_others_is_refused_and_text_stops_at_whitespace() {
        use std::os::unix::fs::PermissionsExt;
        let home = temp_dir("perm");
        let path = home.join(".erlang.cookie");
        std::fs::write(&path, "SECRET\nrest").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Cookie::read(&path),
            Err(CookieError::Permissions(_))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Cookie::read(&path).unwrap().as_str(), "SECRET");
        assert_eq!(format!("{:?}", Cookie::new("SECRET")), "Cookie(<secret>)");
        std::fs::remove_dir_all(&home).ok();
    }
}
