//! Compose arch names and their registry platforms (docs/gate.md).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An architecture as a compose names it.
///
/// The order of the variants is the order archgate lists arches in, and the
/// order of the entries of every index it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    /// `x86_64`: linux/amd64.
    X86_64,
    /// `aarch64`: linux/arm64.
    Aarch64,
    /// `ppc64le`: linux/ppc64le.
    Ppc64le,
    /// `s390x`: linux/s390x.
    S390x,
    /// `armhfp`: linux/arm/v7.
    Armhfp,
    /// `i686`: linux/386.
    I686,
    /// `riscv64`: linux/riscv64.
    Riscv64,
}

impl Arch {
    /// Every arch, in listing order.
    pub const ALL: [Arch; 7] = [
        Arch::X86_64,
        Arch::Aarch64,
        Arch::Ppc64le,
        Arch::S390x,
        Arch::Armhfp,
        Arch::I686,
        Arch::Riscv64,
    ];

    /// The compose arch name (`x86_64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
            Arch::Armhfp => "armhfp",
            Arch::I686 => "i686",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// The platform used for this arch where the image's own config does not say.
    pub fn default_platform(self) -> Platform {
        let (architecture, variant) = match self {
            Arch::X86_64 => ("amd64", None),
            Arch::Aarch64 => ("arm64", None),
            Arch::Ppc64le => ("ppc64le", None),
            Arch::S390x => ("s390x", None),
            Arch::Armhfp => ("arm", Some("v7")),
            Arch::I686 => ("386", None),
            Arch::Riscv64 => ("riscv64", None),
        };
        Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// The name Docker's official images give this arch's namespace
    /// (`amd64/debian`, `arm64v8/debian`, `arm32v7/debian`).
    pub fn docker_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64v8",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
            Arch::Armhfp => "arm32v7",
            Arch::I686 => "i386",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// The platform's architecture name, as Go and OCI name it (`amd64`,
    /// `arm64`, `arm`): per-arch tags such as `1.2-arm64` use it.
    pub fn goarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
            Arch::Armhfp => "arm",
            Arch::I686 => "386",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// The compose arch a registry platform stands for, if any.
    ///
    /// Only Linux platforms map. `arm64` with or without variant `v8` is aarch64;
    /// `arm` with variant `v7` (or none) is armhfp.
    pub fn from_platform(platform: &Platform) -> Option<Arch> {
        if platform.os != "linux" {
            return None;
        }
        let variant = platform.variant.as_deref();
        match (platform.architecture.as_str(), variant) {
            ("amd64", None) => Some(Arch::X86_64),
            ("arm64", None | Some("v8")) => Some(Arch::Aarch64),
            ("ppc64le", None) => Some(Arch::Ppc64le),
            ("s390x", None) => Some(Arch::S390x),
            ("arm", None | Some("v7")) => Some(Arch::Armhfp),
            ("386", None) => Some(Arch::I686),
            ("riscv64", None) => Some(Arch::Riscv64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An arch name that is not one of the compose arches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownArch(pub String);

impl fmt::Display for UnknownArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown arch `{}`; known arches: ", self.0)?;
        let names: Vec<&str> = Arch::ALL.iter().map(|a| a.as_str()).collect();
        f.write_str(&names.join(", "))
    }
}

impl std::error::Error for UnknownArch {}

impl FromStr for Arch {
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownArch(s.to_string()))
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A registry platform: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// The OCI architecture: `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// `v7`, `v8`, `v2`, ... where the platform has one.
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Serialize for Platform {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What one line of a decision is about: a compose arch, or an entry of
/// the current index whose platform is no compose arch (another tool's
/// `linux/loong64`, `linux/amd64` variant `v2`, `windows/amd64`). Compose
/// arches come first, in arch order; foreign platforms after them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// A compose arch.
    Arch(Arch),
    /// A platform with no compose arch, and its name (`linux/loong64`).
    Foreign(Platform, String),
}

impl Slot {
    /// The slot of a platform.
    pub fn of(platform: &Platform) -> Slot {
        match Arch::from_platform(platform) {
            Some(arch) => Slot::Arch(arch),
            None => Slot::Foreign(platform.clone(), platform.to_string()),
        }
    }

    /// The arch name (`x86_64`), or the foreign platform (`linux/loong64`).
    pub fn as_str(&self) -> &str {
        match self {
            Slot::Arch(a) => a.as_str(),
            Slot::Foreign(_, name) => name,
        }
    }

    /// The compose arch, if it is one.
    pub fn arch(&self) -> Option<Arch> {
        match self {
            Slot::Arch(a) => Some(*a),
            Slot::Foreign(..) => None,
        }
    }
}

impl From<Arch> for Slot {
    fn from(a: Arch) -> Slot {
        Slot::Arch(a)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for Slot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        }
    }

    #[test]
    fn every_arch_maps_to_its_platform_and_back() {
        for arch in Arch::ALL {
            let p = arch.default_platform();
            assert_eq!(Arch::from_platform(&p), Some(arch), "{p}");
            assert_eq!(arch.as_str().parse::<Arch>(), Ok(arch));
        }
        assert_eq!(Arch::X86_64.default_platform().to_string(), "linux/amd64");
        assert_eq!(Arch::Armhfp.default_platform().to_string(), "linux/arm/v7");
        assert_eq!(Arch::I686.default_platform().to_string(), "linux/386");
    }

    #[test]
    fn arm64_with_or_without_v8_is_aarch64() {
        assert_eq!(
            Arch::from_platform(&platform("linux", "arm64", Some("v8"))),
            Some(Arch::Aarch64)
        );
        assert_eq!(
            Arch::from_platform(&platform("linux", "arm64", None)),
            Some(Arch::Aarch64)
        );
        assert_eq!(
            Arch::from_platform(&platform("linux", "arm", Some("v6"))),
            None
        );
        assert_eq!(
            Arch::from_platform(&platform("windows", "amd64", None)),
            None
        );
        assert_eq!(
            Arch::from_platform(&platform("unknown", "unknown", None)),
            None
        );
    }

    #[test]
    fn unknown_arch_names_the_known_ones() {
        let err = "arm64".parse::<Arch>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown arch `arm64`; known arches: x86_64, aarch64, ppc64le, s390x, armhfp, i686, riscv64"
        );
    }
}
