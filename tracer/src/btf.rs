//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! It answers the questions the loader has: where is member `a.b.c` of struct `s`
//! (byte offset, bitfield position, size), does a struct member or a function
//! exist, and how many arguments does a tracepoint pass. aya-obj parses BTF too
//! but does not expose member offsets.

use std::{collections::HashMap, fmt, path::Path};

use anyhow::{Context as _, anyhow, bail, ensure};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u32) -> anyhow::Result<Self> {
        Ok(match raw {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            other => bail!("unknown BTF kind {other}"),
        })
    }
}

/// A struct or union member as BTF describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawMember {
    name: u32,
    type_id: u32,
    /// Offset in bits from the start of the containing struct.
    bit_offset: u32,
    /// Non-zero for bitfields.
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: Kind,
    /// `size` for sized kinds, `type` for reference kinds.
    size_or_type: u32,
    vlen: u32,
    members: Vec<RawMember>,
    /// Array element type and count.
    array: Option<(u32, u32)>,
}

/// Where a (possibly nested) member lives, from the start of the outer struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberLocation {
    /// Byte offset of the member, or of the byte holding its first bit for a bitfield.
    pub byte_offset: u32,
    /// Bit position within that byte (0 unless a bitfield).
    pub bit_in_byte: u32,
    /// Width in bits for a bitfield, 0 otherwise.
    pub bitfield_size: u32,
    /// Size in bytes of the member's type.
    pub size: u32,
}

pub struct Btf {
    /// Index 0 is `void`.
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<(Kind, String), Vec<u32>>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .finish()
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u32(&mut self) -> anyhow::Result<u32> {
        let bytes = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| anyhow!("BTF type section truncated at byte {}", self.pos))?;
        self.pos += 4;
        Ok(u32::from_le_bytes(bytes.try_into()?))
    }

    fn skip(&mut self, words: usize) -> anyhow::Result<()> {
        for _ in 0..words {
            self.u32()?;
        }
        Ok(())
    }
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> anyhow::Result<Self> {
        Self::from_file(Path::new(VMLINUX))
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&data).with_context(|| format!("parsing BTF in {}", path.display()))
    }

    /// Parses a little-endian BTF blob (the layout of `/sys/kernel/btf/vmlinux`).
    pub fn parse(data: &[u8]) -> anyhow::Result<Self> {
        let header = |at: usize| -> anyhow::Result<u32> {
            Ok(u32::from_le_bytes(
                data.get(at..at + 4)
                    .ok_or_else(|| anyhow!("BTF header truncated"))?
                    .try_into()?,
            ))
        };
        ensure!(
            data.len() >= 24,
            "BTF blob of {} bytes is too short",
            data.len()
        );
        let magic = u16::from_le_bytes([data[0], data[1]]);
        ensure!(
            magic == MAGIC,
            "not BTF (magic {magic:#06x}, want {MAGIC:#06x}; big-endian BTF is not supported)"
        );
        let hdr_len = header(4)? as usize;
        let (type_off, type_len) = (header(8)? as usize, header(12)? as usize);
        let (str_off, str_len) = (header(16)? as usize, header(20)? as usize);
        let section = |off: usize, len: usize, what: &str| {
            data.get(hdr_len + off..hdr_len + off + len)
                .ok_or_else(|| anyhow!("BTF {what} section out of bounds"))
        };
        let type_data = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        let mut types = vec![Type {
            name: 0,
            kind: Kind::Int,
            size_or_type: 0,
            vlen: 0,
            members: Vec::new(),
            array: None,
        }];
        let mut cur = Cursor {
            data: type_data,
            pos: 0,
        };
        while cur.pos < type_data.len() {
            let name = cur.u32()?;
            let info = cur.u32()?;
            let size_or_type = cur.u32()?;
            let kind = Kind::from_raw((info >> 24) & 0x1f)?;
            let vlen = info & 0xffff;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let mut array = None;
            match kind {
                Kind::Int | Kind::Var | Kind::DeclTag => cur.skip(1)?,
                Kind::Array => {
                    let elem = cur.u32()?;
                    let _index = cur.u32()?;
                    let n = cur.u32()?;
                    array = Some((elem, n));
                }
                Kind::Struct | Kind::Union => {
                    for _ in 0..vlen {
                        let name = cur.u32()?;
                        let type_id = cur.u32()?;
                        let offset = cur.u32()?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0xff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(RawMember {
                            name,
                            type_id,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                }
                Kind::Enum => cur.skip(2 * vlen as usize)?,
                Kind::Enum64 | Kind::Datasec => cur.skip(3 * vlen as usize)?,
                Kind::FuncProto => cur.skip(2 * vlen as usize)?,
                Kind::Ptr
                | Kind::Fwd
                | Kind::Typedef
                | Kind::Volatile
                | Kind::Const
                | Kind::Restrict
                | Kind::Func
                | Kind::Float
                | Kind::TypeTag => {}
            }
            types.push(Type {
                name,
                kind,
                size_or_type,
                vlen,
                members,
                array,
            });
        }

        let mut btf = Self {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for id in 1..btf.types.len() as u32 {
            let t = &btf.types[id as usize];
            if t.name != 0 {
                let key = (t.kind, btf.string(t.name)?.to_owned());
                btf.by_name.entry(key).or_default().push(id);
            }
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> anyhow::Result<&str> {
        let rest = self
            .strings
            .get(off as usize..)
            .ok_or_else(|| anyhow!("BTF string offset {off} out of bounds"))?;
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).context("BTF string is not UTF-8")
    }

    fn get(&self, id: u32) -> anyhow::Result<&Type> {
        self.types
            .get(id as usize)
            .ok_or_else(|| anyhow!("BTF type id {id} out of range"))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> anyhow::Result<u32> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        bail!("BTF type chain from id {id} too long")
    }

    fn size_of(&self, id: u32) -> anyhow::Result<u32> {
        let id = self.resolve(id)?;
        let t = self.get(id)?;
        Ok(match t.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float => {
                t.size_or_type
            }
            Kind::Ptr => 8,
            Kind::Array => {
                let (elem, n) = t.array.unwrap_or((0, 0));
                self.size_of(elem)? * n
            }
            other => bail!("BTF type id {id} ({other:?}) has no size"),
        })
    }

    /// The complete (non-forward) struct or union with this name.
    fn composite(&self, name: &str) -> Option<u32> {
        [Kind::Struct, Kind::Union]
            .into_iter()
            .filter_map(|kind| self.by_name.get(&(kind, name.to_owned())))
            .flatten()
            .copied()
            .find(|&id| self.types[id as usize].vlen > 0)
    }

    /// Finds `name` among the members of composite `id`, looking inside anonymous
    /// structs and unions; returns its bit offset from the start of `id`.
    fn find_member(&self, id: u32, name: &str) -> anyhow::Result<Option<(u32, RawMember)>> {
        let t = self.get(id)?;
        for m in &t.members {
            if m.name != 0 {
                if self.string(m.name)? == name {
                    return Ok(Some((m.bit_offset, m.clone())));
                }
                continue;
            }
            let inner = self.resolve(m.type_id)?;
            if matches!(self.get(inner)?.kind, Kind::Struct | Kind::Union)
                && let Some((off, found)) = self.find_member(inner, name)?
            {
                return Ok(Some((m.bit_offset + off, found)));
            }
        }
        Ok(None)
    }

    /// Locates `path` (members separated by dots, e.g. `css.cgroup`) inside struct
    /// `struct_name`. The error names the struct and member that are missing.
    pub fn member(&self, struct_name: &str, path: &str) -> anyhow::Result<MemberLocation> {
        let mut id = self
            .composite(struct_name)
            .ok_or_else(|| anyhow!("kernel BTF has no struct {struct_name}"))?;
        let mut bits = 0u32;
        let mut current = struct_name.to_owned();
        let mut last = None;
        for part in path.split('.') {
            let (off, member) = self.find_member(id, part)?.ok_or_else(|| {
                anyhow!("kernel BTF has no member `{part}` in struct {current} (looking for {struct_name}.{path})")
            })?;
            bits += off;
            id = self.resolve(member.type_id)?;
            current = match self.get(id)?.name {
                0 => format!("<anonymous in {current}>"),
                n => self.string(n)?.to_owned(),
            };
            last = Some(member);
        }
        let member = last.ok_or_else(|| anyhow!("empty member path"))?;
        let size = self.size_of(member.type_id)?;
        if member.bitfield_size == 0 {
            ensure!(
                bits.is_multiple_of(8),
                "{struct_name}.{path} is not byte aligned (bit {bits})"
            );
        }
        Ok(MemberLocation {
            byte_offset: bits / 8,
            bit_in_byte: bits % 8,
            bitfield_size: member.bitfield_size,
            size,
        })
    }

    pub fn has_member(&self, struct_name: &str, path: &str) -> bool {
        self.member(struct_name, path).is_ok()
    }

    /// Whether the kernel has a (complete) struct or union of this name.
    pub fn has_struct(&self, name: &str) -> bool {
        self.composite(name).is_some()
    }

    /// Whether the kernel has a function of this name (a BTF FUNC entry).
    pub fn has_function(&self, name: &str) -> bool {
        self.by_name.contains_key(&(Kind::Func, name.to_owned()))
    }

    /// Number of arguments a BTF-enabled tracepoint passes to its programs: the
    /// parameters of `btf_trace_<name>` minus its leading `void *`.
    pub fn tracepoint_args(&self, name: &str) -> anyhow::Result<u32> {
        let typedef = format!("btf_trace_{name}");
        let id = *self
            .by_name
            .get(&(Kind::Typedef, typedef.clone()))
            .and_then(|ids| ids.first())
            .ok_or_else(|| anyhow!("kernel BTF has no tracepoint {name} ({typedef})"))?;
        let ptr = self.get(self.get(id)?.size_or_type)?;
        ensure!(ptr.kind == Kind::Ptr, "{typedef} is not a function pointer");
        let proto = self.get(self.resolve(ptr.size_or_type)?)?;
        ensure!(
            proto.kind == Kind::FuncProto,
            "{typedef} does not point to a function prototype"
        );
        proto
            .vlen
            .checked_sub(1)
            .ok_or_else(|| anyhow!("{typedef} takes no arguments"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds BTF blobs by hand so that offsets can be asserted exactly.
    #[derive(Default)]
    pub(crate) struct Builder {
        types: Vec<u32>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn push(&mut self, words: &[u32]) -> u32 {
            self.types.extend_from_slice(words);
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
            let n = self.str(name);
            self.push(&[n, 1 << 24, size, size * 8])
        }

        pub(crate) fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
            self.push(&[0, 3 << 24, 0, elem, index, n])
        }

        pub(crate) fn ptr(&mut self, to: u32) -> u32 {
            self.push(&[0, 2 << 24, to])
        }

        pub(crate) fn typedef(&mut self, name: &str, to: u32) -> u32 {
            let n = self.str(name);
            self.push(&[n, 8 << 24, to])
        }

        pub(crate) fn func(&mut self, name: &str, proto: u32) -> u32 {
            let n = self.str(name);
            self.push(&[n, 12 << 24, proto])
        }

        pub(crate) fn func_proto(&mut self, ret: u32, params: &[u32]) -> u32 {
            let mut words = vec![0, (13 << 24) | params.len() as u32, ret];
            for &p in params {
                words.extend([0, p]);
            }
            self.push(&words)
        }

        /// `members`: (name, type, bit offset, bitfield size).
        pub(crate) fn composite(
            &mut self,
            union: bool,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let n = self.str(name);
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let kind = if union { 5 } else { 4 };
            let mut words = vec![
                n,
                (u32::from(kind_flag) << 31) | (kind << 24) | members.len() as u32,
                size,
            ];
            for &(name, ty, bits, bitfield) in members {
                let mn = self.str(name);
                let offset = if kind_flag {
                    (bitfield << 24) | bits
                } else {
                    bits
                };
                words.extend([mn, ty, offset]);
            }
            self.push(&words)
        }

        pub(crate) fn build(&self) -> Vec<u8> {
            let type_bytes: Vec<u8> = self.types.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut out = Vec::new();
            out.extend(MAGIC.to_le_bytes());
            out.extend([1u8, 0]);
            for w in [
                24u32,
                0,
                type_bytes.len() as u32,
                type_bytes.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend(w.to_le_bytes());
            }
            out.extend(type_bytes);
            out.extend(&self.strings);
            out
        }
    }

    fn sample() -> Btf {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let u64_ = b.int("long long unsigned int", 8);
        let boolean = b.int("_Bool", 1);
        let inner = b.composite(false, "inner", 16, &[("a", int, 0, 0), ("id", u64_, 64, 0)]);
        let inner_ptr = b.ptr(inner);
        let anon = b.composite(true, "", 8, &[("x", int, 0, 0), ("hidden", u64_, 0, 0)]);
        b.composite(
            false,
            "outer",
            64,
            &[
                ("first", int, 0, 0),
                ("", anon, 64, 0),
                ("nested", inner, 128, 0),
                ("link", inner_ptr, 256, 0),
                ("flag", boolean, 320, 1),
                ("other", boolean, 321, 1),
            ],
        );
        let void_ptr = b.ptr(0);
        let proto = b.func_proto(0, &[void_ptr, boolean, inner_ptr, int]);
        let fptr = b.ptr(proto);
        b.typedef("btf_trace_sample", fptr);
        let fproto = b.func_proto(int, &[inner_ptr]);
        b.func("do_something", fproto);
        Btf::parse(&b.build()).unwrap()
    }

    #[test]
    fn members_and_nesting() {
        let btf = sample();
        let at = |path| btf.member("outer", path).unwrap();
        assert_eq!(at("first").byte_offset, 0);
        assert_eq!(at("first").size, 4);
        // Found through the anonymous union at byte 8.
        assert_eq!(at("hidden").byte_offset, 8);
        assert_eq!(at("hidden").size, 8);
        assert_eq!(at("nested").byte_offset, 16);
        assert_eq!(at("nested.id").byte_offset, 24);
        assert_eq!(at("nested.id").size, 8);
        assert_eq!(at("link").size, 8);
        let flag = at("other");
        assert_eq!(
            (flag.byte_offset, flag.bit_in_byte, flag.bitfield_size),
            (40, 1, 1)
        );
    }

    #[test]
    fn missing_members_are_named() {
        let btf = sample();
        let err = btf.member("outer", "nested.nope").unwrap_err().to_string();
        assert!(
            err.contains("`nope`") && err.contains("struct inner"),
            "{err}"
        );
        let err = btf.member("absent", "x").unwrap_err().to_string();
        assert!(err.contains("no struct absent"), "{err}");
        assert!(!btf.has_member("outer", "nope"));
    }

    #[test]
    fn functions_and_tracepoints() {
        let btf = sample();
        assert!(btf.has_function("do_something"));
        assert!(!btf.has_function("do_nothing"));
        assert_eq!(btf.tracepoint_args("sample").unwrap(), 3);
        assert!(btf.tracepoint_args("nope").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, clearly not").is_err());
        assert!(Btf::parse(&[]).is_err());
        let mut blob = Builder::new();
        blob.int("int", 4);
        let mut bytes = blob.build();
        bytes.truncate(bytes.len() - 6);
        assert!(Btf::parse(&bytes).is_err());
    }
}
