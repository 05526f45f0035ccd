//! Operator accounts outside storage: the rules for names and passwords, and password hashing.
//! Storage keeps only the PHC string; the password itself never leaves this module's callers.
//!
//! argon2id with the `argon2` crate's default parameters (19 MiB of memory, 2 passes, one
//! lane: OWASP's first recommended argon2id setting) and a random 16-byte salt per hash. The
//! parameters travel inside the PHC string, so raising them later keeps old hashes verifiable.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shorter passwords are refused: the console is reachable from the store's network, and an
/// account's hash is the only thing between a guess and the dead-letter desk.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// A password is typed or pasted by a person; anything longer is a mistake (a whole file).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Operator names appear in every timeline entry a person makes: short, one word.
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is too short: at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("the password is too long: at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("the password cannot be hashed: {0}")]
    Hash(String),
}

/// Whether `password` may be set on an account (checked before hashing, by every way in).
pub fn check_password(password: &str) -> Result<(), PasswordError> {
    if password.is_empty() {
        Err(PasswordError::Empty)
    } else if password.chars().count() < MIN_PASSWORD_CHARS {
        Err(PasswordError::TooShort)
    } else if password.len() > MAX_PASSWORD_BYTES {
        Err(PasswordError::TooLong)
    } else {
        Ok(())
    }
}

/// Whether `name` may name an operator: 1 to 64 characters, no whitespace or control
/// characters (it is typed in a login form and shown in timelines). Any script is fine.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the operator name is empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("the operator name is longer than {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("the operator name {name:?} has a space or a control character"));
    }
    Ok(())
}

/// The argon2id PHC string of `password` (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), with a
/// fresh random salt: hashing the same password twice gives two different strings.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string. The comparison of the derived hash is
/// constant-time (argon2's verifier); a stored string that does not parse matches nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // Only argon2id hashes are ours: a stored argon2i/argon2d or foreign string is refused
    // rather than verified with weaker parameters than we chose.
    if parsed.algorithm != argon2::Algorithm::Argon2id.ident() {
        return false;
    }
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "correct horse battery";

    #[test]
    fn a_hash_is_an_argon2id_phc_string_and_never_the_password() {
        let phc = hash_password(PASSWORD).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_ne!(phc, PASSWORD);
        assert!(!phc.contains(PASSWORD));
        // A fresh salt each time.
        assert_ne!(hash_password(PASSWORD).unwrap(), phc);
    }

    #[test]
    fn only_the_right_password_verifies() {
        let phc = hash_password(PASSWORD).unwrap();
        assert!(verify_password(PASSWORD, &phc));
        assert!(!verify_password("correct horse battery ", &phc));
        assert!(!verify_password("Correct horse battery", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn a_damaged_or_foreign_hash_matches_nothing() {
        let phc = hash_password(PASSWORD).unwrap();
        assert!(!verify_password(PASSWORD, ""));
        assert!(!verify_password(PASSWORD, PASSWORD));
        assert!(!verify_password(PASSWORD, &phc[..phc.len() - 4]));
        let argon2i = phc.replacen("$argon2id$", "$argon2i$", 1);
        assert!(!verify_password(PASSWORD, &argon2i), "argon2i is not accepted in place of argon2id");
    }

    #[test]
    fn password_rules() {
        assert_eq!(check_password(""), Err(PasswordError::Empty));
        assert_eq!(check_password("123456789"), Err(PasswordError::TooShort));
        assert_eq!(check_password("1234567890"), Ok(()));
        // Characters, not bytes: ten Cyrillic letters are ten characters.
        assert_eq!(check_password("пароль-пар"), Ok(()));
        assert_eq!(check_password("пароль-па"), Err(PasswordError::TooShort));
        assert_eq!(check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)), Err(PasswordError::TooLong));
    }

    #[test]
    fn name_rules() {
        assert!(check_name("anna").is_ok());
        assert!(check_name("Анна.К").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("anna k").is_err());
        assert!(check_name("anna\u{0}").is_err());
        assert!(check_name(&"a".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(check_name(&"a".repeat(MAX_NAME_CHARS)).is_ok());
    }
}
