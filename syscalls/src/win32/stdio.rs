//! msvcrt stdio: FILE streams kept in urun (the guest's 48-byte FILE
//! structs only carry `_file`), text mode (`\n` written as `\r\n`, `\r\n`
//! read as `\n`) as msvcrt does by default, and a printf engine over the
//! Windows x64 va_list (8-byte slots; floats as their bits), with msvcrt's
//! formats (`%p` as 16 upper-case digits, 3-digit exponents, `long` is
//! 32 bits, `%I64d`).

use std::collections::HashMap;

use urun_cpu::AddressSpace;

use super::abi::{Call, Fail, Res};
use super::lock;
use super::msvcrt::set_errno;

const FILE_SIZE: u64 = 48;
const FILE_FD: u64 = 28;
const EOF: u64 = u32::MAX as u64;
const BUF: usize = 4096;

struct Stream {
    fd: i32,
    text: bool,
    eof: bool,
    err: bool,
    /// Flush after every write (stderr), or at each newline (a terminal).
    unbuffered: bool,
    line_buffered: bool,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    rpos: usize,
}

impl Stream {
    fn new(fd: i32, text: bool) -> Self {
        Stream {
            fd,
            text,
            eof: false,
            err: false,
            unbuffered: false,
            line_buffered: false,
            wbuf: Vec::new(),
            rbuf: Vec::new(),
            rpos: 0,
        }
    }

    fn flush(&mut self) -> bool {
        if self.wbuf.is_empty() {
            return true;
        }
        let ok = write_all(self.fd, &self.wbuf).is_ok();
        self.wbuf.clear();
        if !ok {
            self.err = true;
        }
        ok
    }

    fn write(&mut self, data: &[u8]) -> bool {
        if self.text {
            for &b in data {
                if b == b'\n' {
                    self.wbuf.push(b'\r');
                }
                self.wbuf.push(b);
            }
        } else {
            self.wbuf.extend_from_slice(data);
        }
        if self.unbuffered || self.wbuf.len() >= BUF || (self.line_buffered && data.contains(&b'\n')) {
            return self.flush();
        }
        true
    }

    /// Refill the read buffer; false at end of file or on error.
    fn fill(&mut self) -> bool {
        let mut buf = vec![0u8; BUF];
        let n = loop {
            // SAFETY: reading into urun's own buffer.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        if n <= 0 {
            if n < 0 {
                self.err = true;
            } else {
                self.eof = true;
            }
            return false;
        }
        buf.truncate(n as usize);
        self.rbuf = buf;
        self.rpos = 0;
        true
    }

    fn raw_byte(&mut self) -> Option<u8> {
        if self.rpos >= self.rbuf.len() && !self.fill() {
            return None;
        }
        let b = self.rbuf[self.rpos];
        self.rpos += 1;
        Some(b)
    }

    fn getc(&mut self) -> Option<u8> {
        let b = self.raw_byte()?;
        if !self.text {
            return Some(b);
        }
        match b {
            b'\r' => match self.raw_byte() {
                Some(b'\n') => Some(b'\n'),
                Some(_) => {
                    self.rpos -= 1;
                    Some(b'\r')
                }
                None => Some(b'\r'),
            },
            0x1a => {
                self.eof = true;
                None
            }
            b => Some(b),
        }
    }

    /// The file position (bytes read ahead and written behind accounted).
    fn tell(&self) -> i64 {
        // SAFETY: lseek on the stream's own descriptor.
        let pos = unsafe { libc::lseek(self.fd, 0, libc::SEEK_CUR) };
        if pos < 0 {
            return -1;
        }
        pos - (self.rbuf.len() - self.rpos) as i64 + self.wbuf.len() as i64
    }
}

pub(crate) struct Streams {
    map: HashMap<u64, Stream>,
}

impl Streams {
    pub fn new(iob: u64) -> Self {
        let mut map = HashMap::new();
        for fd in 0..3 {
            let mut s = Stream::new(fd, true);
            // SAFETY: isatty on a standard descriptor.
            s.line_buffered = unsafe { libc::isatty(fd) } == 1;
            s.unbuffered = fd == 2;
            map.insert(iob + FILE_SIZE * fd as u64, s);
        }
        Streams { map }
    }

    pub fn flush_all(&mut self) {
        for s in self.map.values_mut() {
            s.flush();
        }
    }

    /// Flush the stream of host descriptor `fd` (before a raw write to it).
    pub fn flush_fd(&mut self, fd: i32) {
        for s in self.map.values_mut().filter(|s| s.fd == fd) {
            s.flush();
        }
    }
}

/// Write all of `data` to `fd`; the count written or the errno.
pub(crate) fn write_all(fd: i32, data: &[u8]) -> Result<usize, i32> {
    let mut done = 0;
    while done < data.len() {
        // SAFETY: writing from urun's own buffer.
        let n = unsafe { libc::write(fd, data[done..].as_ptr().cast(), data.len() - done) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.raw_os_error().unwrap_or(libc::EIO));
        }
        done += n as usize;
    }
    Ok(done)
}

/// Fill `_iob` with stdin, stdout and stderr's descriptors.
pub(crate) fn init_iob(mem: &AddressSpace, iob: u64) -> Result<(), String> {
    for fd in 0..3u32 {
        super::poke(mem, iob + FILE_SIZE * u64::from(fd) + FILE_FD, &fd.to_le_bytes())?;
    }
    Ok(())
}

/// Run `f` on the stream `file` names; None when it names none.
fn with<T>(c: &Call<'_>, file: u64, f: impl FnOnce(&mut Stream) -> T) -> Option<T> {
    lock(&c.p.streams).map.get_mut(&file).map(f)
}

fn put(c: &mut Call<'_>, file: u64, data: &[u8]) -> bool {
    if with(c, file, |s| if s.fd == 0 { false } else { s.write(data) }) == Some(true) {
        return true;
    }
    with(c, file, |s| s.err = true);
    false
}

/// A guest path as a host path: `\` becomes `/` and a drive letter is
/// dropped (`C:\tmp\x` is `/tmp/x`).
pub(crate) fn host_path(p: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = p.iter().map(|&b| if b == b'\\' { b'/' } else { b }).collect();
    if v.len() >= 2 && v[1] == b':' && v[0].is_ascii_alphabetic() {
        v.drain(..2);
        if v.first() != Some(&b'/') {
            v.insert(0, b'/');
        }
    }
    v
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

pub(crate) fn fopen(c: &mut Call<'_>) -> Res {
    let (path, mode) = (c.cstr(c.arg(0)?)?, c.cstr(c.arg(1)?)?);
    let mut flags = match mode.first() {
        Some(b'r') => libc::O_RDONLY,
        Some(b'w') => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        Some(b'a') => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => {
            set_errno(c, libc::EINVAL)?;
            return Ok(0);
        }
    };
    if mode.contains(&b'+') {
        flags = (flags & !(libc::O_WRONLY | libc::O_RDONLY)) | libc::O_RDWR;
    }
    if mode.contains(&b'x') {
        flags |= libc::O_EXCL;
    }
    let fmode = c.u32_at(c.p.data(super::DataObj::Fmode))?;
    let text = if mode.contains(&b'b') { false } else { mode.contains(&b't') || fmode & 0x8000 == 0 };
    let Ok(cpath) = std::ffi::CString::new(host_path(&path)) else {
        set_errno(c, libc::ENOENT)?;
        return Ok(0);
    };
    // SAFETY: a valid C string; the mode bits are the usual 0666.
    let fd = unsafe { libc::open(cpath.as_ptr(), flags | libc::O_CLOEXEC, 0o666) };
    if fd < 0 {
        set_errno(c, errno())?;
        return Ok(0);
    }
    // A `_FILEX`: the FILE, then the CRITICAL_SECTION mingw's _lock_file
    // enters for streams outside `_iob` (LockCount -1: free).
    let Some(file) = lock(&c.p.heap).alloc_zeroed(FILE_SIZE + 40) else {
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(fd) };
        set_errno(c, libc::ENOMEM)?;
        return Ok(0);
    };
    c.put_u32(file + FILE_FD, fd as u32)?;
    c.put_u32(file + FILE_SIZE + 8, u32::MAX)?;
    lock(&c.p.streams).map.insert(file, Stream::new(fd, text));
    Ok(file)
}

pub(crate) fn fclose(c: &mut Call<'_>) -> Res {
    let file = c.arg(0)?;
    let Some(mut s) = lock(&c.p.streams).map.remove(&file) else { return Ok(EOF) };
    let ok = s.flush();
    if s.fd > 2 {
        // SAFETY: closing the stream's own descriptor.
        unsafe { libc::close(s.fd) };
        lock(&c.p.heap).free(file);
    }
    Ok(if ok { 0 } else { EOF })
}

pub(crate) fn fflush(c: &mut Call<'_>) -> Res {
    let file = c.arg(0)?;
    if file == 0 {
        lock(&c.p.streams).flush_all();
        return Ok(0);
    }
    Ok(if with(c, file, |s| s.flush()) == Some(true) { 0 } else { EOF })
}

pub(crate) fn fputc(c: &mut Call<'_>) -> Res {
    let (ch, file) = (c.arg(0)? as u8, c.arg(1)?);
    Ok(if put(c, file, &[ch]) { u64::from(ch) } else { EOF })
}

pub(crate) fn putchar(c: &mut Call<'_>) -> Res {
    let ch = c.arg(0)? as u8;
    let out = c.p.data(super::DataObj::Iob) + FILE_SIZE;
    Ok(if put(c, out, &[ch]) { u64::from(ch) } else { EOF })
}

pub(crate) fn fputs(c: &mut Call<'_>) -> Res {
    let (s, file) = (c.cstr(c.arg(0)?)?, c.arg(1)?);
    Ok(if put(c, file, &s) { 0 } else { EOF })
}

pub(crate) fn puts(c: &mut Call<'_>) -> Res {
    let mut s = c.cstr(c.arg(0)?)?;
    s.push(b'\n');
    let out = c.p.data(super::DataObj::Iob) + FILE_SIZE;
    Ok(if put(c, out, &s) { 0 } else { EOF })
}

pub(crate) fn fwrite(c: &mut Call<'_>) -> Res {
    let (buf, size, n, file) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?);
    let Some(total) = size.checked_mul(n) else { return Ok(0) };
    if total == 0 {
        return Ok(0);
    }
    let data = c.read(buf, total as usize)?;
    Ok(if put(c, file, &data) { n } else { 0 })
}

/// Read up to `max` bytes (stopping after a newline when `line`).
fn get(c: &mut Call<'_>, file: u64, max: usize, line: bool) -> Option<Vec<u8>> {
    if with(c, file, |s| s.fd == 0) == Some(true) {
        lock(&c.p.streams).flush_fd(1);
    }
    with(c, file, |s| {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(b) = s.getc() else { break };
            out.push(b);
            if line && b == b'\n' {
                break;
            }
        }
        out
    })
}

pub(crate) fn fread(c: &mut Call<'_>) -> Res {
    let (buf, size, n, file) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?);
    let Some(total) = size.checked_mul(n) else { return Ok(0) };
    if total == 0 {
        return Ok(0);
    }
    let Some(data) = get(c, file, total as usize, false) else { return Ok(0) };
    c.write(buf, &data)?;
    Ok(data.len() as u64 / size)
}

pub(crate) fn fgets(c: &mut Call<'_>) -> Res {
    let (buf, n, file) = (c.arg(0)?, c.arg(1)? as u32 as i32, c.arg(2)?);
    if n <= 0 {
        return Ok(0);
    }
    let Some(mut data) = get(c, file, n as usize - 1, true) else { return Ok(0) };
    if data.is_empty() {
        return Ok(0);
    }
    data.push(0);
    c.write(buf, &data)?;
    Ok(buf)
}

pub(crate) fn fgetc(c: &mut Call<'_>) -> Res {
    let file = c.arg(0)?;
    Ok(match get(c, file, 1, false).as_deref() {
        Some([b]) => u64::from(*b),
        _ => EOF,
    })
}

/// ungetc: the byte goes back in front of what the stream reads next.
pub(crate) fn ungetc(c: &mut Call<'_>) -> Res {
    let (ch, file) = (c.arg(0)? as u32 as i32, c.arg(1)?);
    if ch == -1 {
        return Ok(EOF);
    }
    let b = ch as u8;
    let done = with(c, file, |s| {
        if s.rpos > 0 {
            s.rpos -= 1;
            s.rbuf[s.rpos] = b;
        } else {
            s.rbuf.insert(0, b);
        }
        s.eof = false;
    });
    Ok(if done.is_some() { u64::from(b) } else { EOF })
}

pub(crate) fn fseek(c: &mut Call<'_>) -> Res {
    let (file, off, whence) = (c.arg(0)?, c.arg(1)? as u32 as i32, c.arg(2)? as u32 as i32);
    let r = with(c, file, |s| {
        s.flush();
        let off = i64::from(off) - if whence == libc::SEEK_CUR { (s.rbuf.len() - s.rpos) as i64 } else { 0 };
        s.rbuf.clear();
        s.rpos = 0;
        s.eof = false;
        // SAFETY: lseek on the stream's own descriptor.
        unsafe { libc::lseek(s.fd, off, whence) }
    });
    match r {
        Some(p) if p >= 0 => Ok(0),
        _ => {
            set_errno(c, libc::EINVAL)?;
            Ok(u64::MAX)
        }
    }
}

pub(crate) fn ftell(c: &mut Call<'_>) -> Res {
    let file = c.arg(0)?;
    Ok(with(c, file, |s| s.tell()).unwrap_or(-1) as i32 as u32 as u64)
}

pub(crate) fn rewind(c: &mut Call<'_>) -> Res {
    let file = c.arg(0)?;
    with(c, file, |s| {
        s.flush();
        s.rbuf.clear();
        s.rpos = 0;
        s.eof = false;
        s.err = false;
        // SAFETY: lseek on the stream's own descriptor.
        unsafe { libc::lseek(s.fd, 0, libc::SEEK_SET) };
    });
    Ok(0)
}

pub(crate) fn feof(c: &mut Call<'_>) -> Res {
    let file = c.arg(0)?;
    Ok(u64::from(with(c, file, |s| s.eof && s.rpos >= s.rbuf.len()).unwrap_or(false)) * 0x10)
}

pub(crate) fn ferror(c: &mut Call<'_>) -> Res {
    let file = c.arg(0)?;
    Ok(u64::from(with(c, file, |s| s.err).unwrap_or(false)) * 0x20)
}

pub(crate) fn fileno(c: &mut Call<'_>) -> Res {
    let file = c.arg(0)?;
    Ok(with(c, file, |s| s.fd).unwrap_or(-1) as u32 as u64)
}

pub(crate) fn setmode(c: &mut Call<'_>) -> Res {
    let (fd, mode) = (c.arg(0)? as u32 as i32, c.arg(1)? as u32);
    let mut streams = lock(&c.p.streams);
    let mut old = 0x4000u64;
    for s in streams.map.values_mut().filter(|s| s.fd == fd) {
        old = if s.text { 0x4000 } else { 0x8000 };
        s.flush();
        s.text = mode & 0x8000 == 0;
    }
    Ok(old)
}

pub(crate) fn remove(c: &mut Call<'_>) -> Res {
    let path = c.cstr(c.arg(0)?)?;
    let Ok(cpath) = std::ffi::CString::new(host_path(&path)) else { return Ok(u64::MAX) };
    // SAFETY: a valid C string.
    if unsafe { libc::unlink(cpath.as_ptr()) } != 0 {
        set_errno(c, errno())?;
        return Ok(u32::MAX as u64);
    }
    Ok(0)
}

pub(crate) fn perror(c: &mut Call<'_>) -> Res {
    let s = c.arg(0)?;
    let e = c.u32_at(c.p.data(super::DataObj::Errno))? as i32;
    let mut msg = if s != 0 { c.cstr(s)? } else { Vec::new() };
    if !msg.is_empty() {
        msg.extend_from_slice(b": ");
    }
    msg.extend_from_slice(super::msvcrt::host_strerror(e).as_bytes());
    msg.push(b'\n');
    let err = c.p.data(super::DataObj::Iob) + 2 * FILE_SIZE;
    put(c, err, &msg);
    Ok(0)
}

/// Where a printf's arguments come from: the call's own arguments from
/// index `next` on, or a va_list.
enum Args {
    Call(usize),
    VaList(u64),
}

impl Args {
    fn next(&mut self, c: &Call<'_>) -> Result<u64, Fail> {
        match self {
            Args::Call(i) => {
                *i += 1;
                c.arg(*i - 1)
            }
            Args::VaList(p) => {
                *p += 8;
                c.u64_at(*p - 8)
            }
        }
    }
}

/// Format `fmt` as msvcrt's printf does (`exp3`: three-digit exponents;
/// ucrt gives two unless asked for the legacy form).
fn format(c: &Call<'_>, fmt: &[u8], mut args: Args, exp3: bool) -> Result<Vec<u8>, Fail> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < fmt.len() {
        let b = fmt[i];
        i += 1;
        if b != b'%' {
            out.push(b);
            continue;
        }
        let mut flags = Vec::new();
        while i < fmt.len() && b"-+ #0".contains(&fmt[i]) {
            flags.push(fmt[i]);
            i += 1;
        }
        let num = |i: &mut usize, args: &mut Args| -> Result<Option<i64>, Fail> {
            if *i < fmt.len() && fmt[*i] == b'*' {
                *i += 1;
                return Ok(Some(i64::from(args.next(c)? as u32 as i32).clamp(-(1 << 24), 1 << 24)));
            }
            let start = *i;
            while *i < fmt.len() && fmt[*i].is_ascii_digit() {
                *i += 1;
            }
            // Widths past 16 MiB are cut there (urun's buffer, not the
            // guest's, would hold the padding).
            Ok(std::str::from_utf8(&fmt[start..*i]).ok().and_then(|s| s.parse::<i64>().ok()).map(|v| v.min(1 << 24)))
        };
        let mut width = num(&mut i, &mut args)?;
        if let Some(w) = width {
            if w < 0 {
                flags.push(b'-');
                width = Some(-w);
            }
        }
        let mut prec = None;
        if i < fmt.len() && fmt[i] == b'.' {
            i += 1;
            prec = Some(num(&mut i, &mut args)?.unwrap_or(0)).filter(|p| *p >= 0);
        }
        // Length: bits of the integer argument (0: default int), wide.
        let mut bits = 0;
        let mut wide = false;
        loop {
            let rest = &fmt[i.min(fmt.len())..];
            let (adv, b2) = match rest {
                [b'I', b'6', b'4', ..] => (3, 64),
                [b'I', b'3', b'2', ..] => (3, 32),
                [b'l', b'l', ..] => (2, 64),
                [b'h', b'h', ..] => (2, 8),
                [b'I', ..] | [b'z', ..] | [b'j', ..] | [b't', ..] => (1, 64),
                [b'l', ..] | [b'w', ..] => {
                    wide = true;
                    (1, 32)
                }
                [b'h', ..] => (1, 16),
                [b'L', ..] => (1, 64),
                _ => (0, 0),
            };
            if adv == 0 {
                break;
            }
            i += adv;
            bits = b2;
        }
        let Some(&conv) = fmt.get(i) else { break };
        i += 1;
        let left = flags.contains(&b'-');
        let pad = |body: Vec<u8>, zero_ok: bool| -> Vec<u8> {
            let w = width.unwrap_or(0).max(0) as usize;
            if body.len() >= w {
                return body;
            }
            let fill = w - body.len();
            if left {
                [body, vec![b' '; fill]].concat()
            } else if zero_ok && flags.contains(&b'0') {
                // Zeros go after any sign or 0x prefix.
                let sign = body.iter().take_while(|b| b"+- ".contains(b)).count();
                let prefix = if body[sign..].starts_with(b"0x") || body[sign..].starts_with(b"0X") { 2 } else { 0 };
                let at = sign + prefix;
                [&body[..at], &vec![b'0'; fill], &body[at..]].concat()
            } else {
                [vec![b' '; fill], body].concat()
            }
        };
        match conv {
            b'%' => out.push(b'%'),
            b'd' | b'i' | b'u' | b'x' | b'X' | b'o' => {
                let raw = args.next(c)?;
                let signed = matches!(conv, b'd' | b'i');
                let (neg, mag) = match (bits, signed) {
                    (64, true) => ((raw as i64) < 0, (raw as i64).unsigned_abs()),
                    (64, false) => (false, raw),
                    (16, true) => ((raw as i16) < 0, u64::from((raw as i16).unsigned_abs())),
                    (16, false) => (false, raw & 0xffff),
                    (8, true) => ((raw as i8) < 0, u64::from((raw as i8).unsigned_abs())),
                    (8, false) => (false, raw & 0xff),
                    (_, true) => ((raw as i32) < 0, u64::from((raw as i32).unsigned_abs())),
                    (_, false) => (false, raw & 0xffff_ffff),
                };
                let mut digits = match conv {
                    b'x' => format!("{mag:x}"),
                    b'X' => format!("{mag:X}"),
                    b'o' => format!("{mag:o}"),
                    _ => format!("{mag}"),
                }
                .into_bytes();
                if let Some(p) = prec {
                    if p == 0 && mag == 0 {
                        digits.clear();
                    }
                    while (digits.len() as i64) < p {
                        digits.insert(0, b'0');
                    }
                }
                let mut body = Vec::new();
                if neg {
                    body.push(b'-');
                } else if signed && flags.contains(&b'+') {
                    body.push(b'+');
                } else if signed && flags.contains(&b' ') {
                    body.push(b' ');
                }
                if flags.contains(&b'#') && mag != 0 {
                    match conv {
                        b'x' => body.extend_from_slice(b"0x"),
                        b'X' => body.extend_from_slice(b"0X"),
                        b'o' => body.push(b'0'),
                        _ => {}
                    }
                }
                body.extend(digits);
                out.extend(pad(body, prec.is_none()));
            }
            b'c' | b'C' => {
                let v = args.next(c)?;
                let body = if wide || conv == b'C' {
                    String::from_utf16_lossy(&[v as u16]).into_bytes()
                } else {
                    vec![v as u8]
                };
                out.extend(pad(body, false));
            }
            b's' | b'S' => {
                let p = args.next(c)?;
                let mut body = if p == 0 {
                    b"(null)".to_vec()
                } else if wide || conv == b'S' {
                    String::from_utf16_lossy(&c.wstr(p)?).into_bytes()
                } else {
                    c.cstr(p)?
                };
                if let Some(pr) = prec {
                    body.truncate(pr as usize);
                }
                out.extend(pad(body, false));
            }
            b'p' => {
                let v = args.next(c)?;
                out.extend(pad(format!("{v:016X}").into_bytes(), false));
            }
            b'e' | b'E' | b'f' | b'F' | b'g' | b'G' | b'a' | b'A' => {
                let v = f64::from_bits(args.next(c)?);
                out.extend(float(v, &flags, width, prec, conv, exp3));
            }
            b'n' => {
                // Disabled in msvcrt by default: the format stops here.
                let _ = args.next(c)?;
                break;
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// One floating-point conversion, by the host's C library, with msvcrt's
/// three-digit exponents.
fn float(v: f64, flags: &[u8], width: Option<i64>, prec: Option<i64>, conv: u8, exp3: bool) -> Vec<u8> {
    let mut spec = b"%".to_vec();
    spec.extend_from_slice(flags);
    if let Some(w) = width {
        spec.extend_from_slice(w.to_string().as_bytes());
    }
    if let Some(p) = prec {
        spec.push(b'.');
        spec.extend_from_slice(p.min(300).to_string().as_bytes());
    }
    spec.push(conv);
    spec.push(0);
    let mut buf = vec![0u8; 512];
    // SAFETY: `spec` is a NUL-terminated format with one double
    // conversion; `buf` is large enough for the clamped precision and is
    // bounded by its length.
    let n = unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), spec.as_ptr().cast(), v) };
    buf.truncate((n.max(0) as usize).min(511));
    if exp3 && matches!(conv, b'e' | b'E' | b'g' | b'G') {
        // e+05 -> e+005
        if let Some(at) = buf.iter().position(|&b| b == b'e' || b == b'E') {
            let digits = buf[at + 2..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 2 && matches!(buf.get(at + 1), Some(b'+') | Some(b'-')) {
                buf.insert(at + 2, b'0');
                // Keep the width: drop one pad character if there was one.
                if let Some(w) = width {
                    if buf.len() as i64 > w && buf[0] == b' ' {
                        buf.remove(0);
                    }
                }
            }
        }
    }
    buf
}

fn print_to(c: &mut Call<'_>, file: u64, fmt: u64, args: Args) -> Res {
    print_opts(c, file, fmt, args, true)
}

fn print_opts(c: &mut Call<'_>, file: u64, fmt: u64, args: Args, exp3: bool) -> Res {
    let fmt = c.cstr(fmt)?;
    let text = format(c, &fmt, args, exp3)?;
    Ok(if put(c, file, &text) { text.len() as u64 } else { u64::from(u32::MAX) })
}

fn stdout(c: &Call<'_>) -> u64 {
    c.p.data(super::DataObj::Iob) + FILE_SIZE
}

pub(crate) fn printf(c: &mut Call<'_>) -> Res {
    let (out, fmt) = (stdout(c), c.arg(0)?);
    print_to(c, out, fmt, Args::Call(1))
}

pub(crate) fn vprintf(c: &mut Call<'_>) -> Res {
    let (out, fmt, va) = (stdout(c), c.arg(0)?, c.arg(1)?);
    print_to(c, out, fmt, Args::VaList(va))
}

pub(crate) fn fprintf(c: &mut Call<'_>) -> Res {
    let (file, fmt) = (c.arg(0)?, c.arg(1)?);
    print_to(c, file, fmt, Args::Call(2))
}

pub(crate) fn vfprintf(c: &mut Call<'_>) -> Res {
    let (file, fmt, va) = (c.arg(0)?, c.arg(1)?, c.arg(2)?);
    print_to(c, file, fmt, Args::VaList(va))
}

pub(crate) fn sprintf(c: &mut Call<'_>) -> Res {
    let (buf, fmt) = (c.arg(0)?, c.cstr(c.arg(1)?)?);
    let mut text = format(c, &fmt, Args::Call(2), true)?;
    let n = text.len();
    text.push(0);
    c.write(buf, &text)?;
    Ok(n as u64)
}

fn snprint(c: &mut Call<'_>, buf: u64, size: u64, fmt: u64, args: Args) -> Res {
    snprint_opts(c, buf, size, fmt, args, true)
}

fn snprint_opts(c: &mut Call<'_>, buf: u64, size: u64, fmt: u64, args: Args, exp3: bool) -> Res {
    let fmt = c.cstr(fmt)?;
    let mut text = format(c, &fmt, args, exp3)?;
    let n = text.len();
    if size > 0 {
        text.truncate(size as usize - 1);
        text.push(0);
        c.write(buf, &text)?;
    }
    Ok(n as u64)
}

pub(crate) fn snprintf(c: &mut Call<'_>) -> Res {
    let (buf, size, fmt) = (c.arg(0)?, c.arg(1)?, c.arg(2)?);
    snprint(c, buf, size, fmt, Args::Call(3))
}

pub(crate) fn vsnprintf(c: &mut Call<'_>) -> Res {
    let (buf, size, fmt, va) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?);
    snprint(c, buf, size, fmt, Args::VaList(va))
}

/// ucrt's `__acrt_iob_func(i)`: stdin, stdout, stderr.
pub(crate) fn acrt_iob_func(c: &mut Call<'_>) -> Res {
    let i = c.arg(0)? as u32;
    Ok(c.p.data(super::DataObj::Iob) + FILE_SIZE * u64::from(i.min(2)))
}

/// `_CRT_INTERNAL_PRINTF_LEGACY_THREE_DIGIT_EXPONENTS`.
const UCRT_LEGACY_EXPONENTS: u64 = 4;

/// ucrt: `__stdio_common_vfprintf(options, FILE*, format, locale, va_list)`.
pub(crate) fn common_vfprintf(c: &mut Call<'_>) -> Res {
    let (opts, file, fmt, va) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(4)?);
    print_opts(c, file, fmt, Args::VaList(va), opts & UCRT_LEGACY_EXPONENTS != 0)
}

/// ucrt: `__stdio_common_vsprintf(options, buf, count, format, locale,
/// va_list)`; with `_CRT_INTERNAL_PRINTF_STANDARD_SNPRINTF_BEHAVIOR` (2)
/// it is C99's vsnprintf, else a truncated result returns -1.
pub(crate) fn common_vsprintf(c: &mut Call<'_>) -> Res {
    let (opts, buf, size, fmt, va) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?, c.arg(5)?);
    let n = snprint_opts(c, buf, size, fmt, Args::VaList(va), opts & UCRT_LEGACY_EXPONENTS != 0)?;
    if opts & 2 == 0 && buf != 0 && n >= size {
        return Ok(u64::from(u32::MAX));
    }
    Ok(n)
}

/// A wide printf format (UTF-8 by now) in the form `format` reads:
/// msvcrt's wide functions take `%s`/`%c` as wide and `%S`/`%C` as narrow
/// unless a size (`h`, `l`, `w`) says otherwise, so `%s` becomes `%ls`
/// and `%S` `%hs`.
fn wide_spec(f: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.len() + 8);
    let mut i = 0;
    while i < f.len() {
        out.push(f[i]);
        if f[i] != b'%' {
            i += 1;
            continue;
        }
        i += 1;
        let start = i;
        while i < f.len() && b"-+ #0123456789.*".contains(&f[i]) {
            i += 1;
        }
        let sized = i < f.len() && b"hlwIL".contains(&f[i]);
        out.extend_from_slice(&f[start..i]);
        match f.get(i) {
            Some(b's' | b'c') if !sized => out.push(b'l'),
            Some(&b'S') if !sized => {
                out.extend_from_slice(b"hs");
                i += 1;
                continue;
            }
            Some(&b'C') if !sized => {
                out.extend_from_slice(b"hc");
                i += 1;
                continue;
            }
            _ => {}
        }
        if let Some(&b) = f.get(i) {
            out.push(b);
            i += 1;
        }
    }
    out
}

fn wformat(c: &Call<'_>, fmt: u64, args: Args) -> Result<Vec<u8>, Fail> {
    let f = String::from_utf16_lossy(&c.wstr(fmt)?).into_bytes();
    format(c, &wide_spec(&f), args, true)
}

/// The count of wide characters `text` (UTF-8) is.
fn wide_len(text: &[u8]) -> u64 {
    String::from_utf8_lossy(text).encode_utf16().count() as u64
}

fn wprint_to(c: &mut Call<'_>, file: u64, fmt: u64, args: Args) -> Res {
    let text = wformat(c, fmt, args)?;
    Ok(if put(c, file, &text) { wide_len(&text) } else { u64::from(u32::MAX) })
}

pub(crate) fn wprintf(c: &mut Call<'_>) -> Res {
    let (out, fmt) = (stdout(c), c.arg(0)?);
    wprint_to(c, out, fmt, Args::Call(1))
}

pub(crate) fn vwprintf(c: &mut Call<'_>) -> Res {
    let (out, fmt, va) = (stdout(c), c.arg(0)?, c.arg(1)?);
    wprint_to(c, out, fmt, Args::VaList(va))
}

pub(crate) fn fwprintf(c: &mut Call<'_>) -> Res {
    let (file, fmt) = (c.arg(0)?, c.arg(1)?);
    wprint_to(c, file, fmt, Args::Call(2))
}

pub(crate) fn vfwprintf(c: &mut Call<'_>) -> Res {
    let (file, fmt, va) = (c.arg(0)?, c.arg(1)?, c.arg(2)?);
    wprint_to(c, file, fmt, Args::VaList(va))
}

/// _snwprintf / _vsnwprintf: at most `count` wide characters, NUL added
/// when there is room; -1 when the text does not fit (msvcrt's behaviour).
fn snwprint(c: &mut Call<'_>, buf: u64, count: u64, fmt: u64, args: Args) -> Res {
    let text = wformat(c, fmt, args)?;
    let mut units: Vec<u16> = String::from_utf8_lossy(&text).encode_utf16().collect();
    let n = units.len() as u64;
    let fits = n < count;
    units.truncate(count.min(n) as usize);
    if fits {
        units.push(0);
    }
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
    c.write(buf, &bytes)?;
    Ok(if n <= count { n } else { u64::from(u32::MAX) })
}

pub(crate) fn snwprintf(c: &mut Call<'_>) -> Res {
    let (buf, count, fmt) = (c.arg(0)?, c.arg(1)?, c.arg(2)?);
    snwprint(c, buf, count, fmt, Args::Call(3))
}

pub(crate) fn vsnwprintf(c: &mut Call<'_>) -> Res {
    let (buf, count, fmt, va) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?);
    snwprint(c, buf, count, fmt, Args::VaList(va))
}

/// fputwc / putwc: one UTF-16 unit as UTF-8 (a lone surrogate as U+FFFD).
pub(crate) fn fputwc(c: &mut Call<'_>) -> Res {
    let (ch, file) = (c.arg(0)? as u16, c.arg(1)?);
    let text = String::from_utf16_lossy(&[ch]).into_bytes();
    Ok(if put(c, file, &text) { u64::from(ch) } else { 0xffff })
}

/// fputws: the string as UTF-8.
pub(crate) fn fputws(c: &mut Call<'_>) -> Res {
    let (s, file) = (c.arg(0)?, c.arg(1)?);
    let text = String::from_utf16_lossy(&c.wstr(s)?).into_bytes();
    Ok(if put(c, file, &text) { 0 } else { u64::from(u32::MAX) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_formats_read_wide_strings_by_default() {
        let cases: &[(&str, &str)] =
            &[("%s=%d", "%ls=%d"), ("%-10S|%c|%C", "%-10hs|%lc|%hc"), ("%ls %hs %5.2f %%s", "%ls %hs %5.2f %%s")];
        for (f, want) in cases {
            assert_eq!(String::from_utf8_lossy(&wide_spec(f.as_bytes())), *want, "{f}");
        }
    }

    #[test]
    fn paths_map_to_host_paths() {
        let cases: &[(&str, &str)] = &[
            ("/tmp/x", "/tmp/x"),
            (r"C:\tmp\x.txt", "/tmp/x.txt"),
            (r"dir\f", "dir/f"),
            ("Z:/a", "/a"),
            ("c:rel", "/rel"),
        ];
        for (g, h) in cases {
            assert_eq!(host_path(g.as_bytes()), h.as_bytes(), "{g}");
        }
    }

    /// value, flags, width, precision, conversion, msvcrt's output
    type FloatCase = (f64, &'static [u8], Option<i64>, Option<i64>, u8, &'static str);

    #[test]
    fn floats_get_msvcrt_exponents() {
        let cases: &[FloatCase] = &[
            (1.5, b"", None, None, b'f', "1.500000"),
            (1e6, b"", None, None, b'e', "1.000000e+006"),
            (123456789.0, b"", None, None, b'g', "1.23457e+008"),
            (0.25, b"", Some(8), Some(2), b'f', "    0.25"),
            (1e-5, b"", Some(14), None, b'e', " 1.000000e-005"),
        ];
        assert_eq!(float(1e6, b"", None, None, b'e', false), b"1.000000e+06");
        for &(v, flags, w, p, conv, want) in cases {
            assert_eq!(String::from_utf8_lossy(&float(v, flags, w, p, conv, true)), want, "{v} {}", conv as char);
        }
    }
}
