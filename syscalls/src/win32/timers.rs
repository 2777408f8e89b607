//! Waitable timers (CreateWaitableTimer(Ex), SetWaitableTimer(Ex),
//! CancelWaitableTimer) as kernel objects of sync.rs's table, the NT wait
//! with a 100 ns timeout (NtWaitForSingleObject, NtDelayExecution), and the
//! timer-resolution calls (timeBeginPeriod, NtSetTimerResolution) that only
//! report success: urun's waits are the host's, already fine-grained.
//! Go's runtime sleeps on a high-resolution timer and NtWaitForSingleObject.

use std::time::{Duration, Instant};

use super::abi::{Call, Res};
use super::kernel32::{now_ns, set_error, ERROR_INVALID_HANDLE};
use super::sync::{create, me, name_arg, Kind, Waited};

const CREATE_WAITABLE_TIMER_MANUAL_RESET: u32 = 1;
const ERROR_NOT_SUPPORTED: u32 = 50;
/// 100 ns units from 1601-01-01 to 1970-01-01.
const EPOCH_DIFF: u64 = 116_444_736_000_000_000;

const STATUS_SUCCESS: u64 = 0;
const STATUS_ABANDONED: u64 = 0x80;
const STATUS_TIMEOUT: u64 = 0x102;
const STATUS_INVALID_HANDLE: u64 = 0xc000_0008;

fn new_timer(c: &mut Call<'_>, manual: bool, name: Option<String>) -> Res {
    create(c, Kind::Timer { manual, set: false, due: None, period: None }, name)
}

/// CreateWaitableTimerA/W(attributes, manual reset, name).
fn create_timer(c: &mut Call<'_>, wide: bool) -> Res {
    let (manual, name) = (c.arg(1)? as u32 != 0, c.arg(2)?);
    let name = name_arg(c, name, wide)?;
    new_timer(c, manual, name)
}

pub(crate) fn create_waitable_timer_a(c: &mut Call<'_>) -> Res {
    create_timer(c, false)
}

pub(crate) fn create_waitable_timer_w(c: &mut Call<'_>) -> Res {
    create_timer(c, true)
}

/// CreateWaitableTimerExA/W(attributes, name, flags, access): the
/// high-resolution flag is accepted (every urun timer is the host's).
fn create_timer_ex(c: &mut Call<'_>, wide: bool) -> Res {
    let (name, flags) = (c.arg(1)?, c.arg(2)? as u32);
    let name = name_arg(c, name, wide)?;
    new_timer(c, flags & CREATE_WAITABLE_TIMER_MANUAL_RESET != 0, name)
}

pub(crate) fn create_waitable_timer_ex_a(c: &mut Call<'_>) -> Res {
    create_timer_ex(c, false)
}

pub(crate) fn create_waitable_timer_ex_w(c: &mut Call<'_>) -> Res {
    create_timer_ex(c, true)
}

/// When a Windows due time (100 ns units: negative relative to now,
/// positive an absolute FILETIME) comes, as a host instant.
fn instant_of(due: i64) -> Instant {
    let now = Instant::now();
    if due <= 0 {
        return now + Duration::from_nanos(due.unsigned_abs().saturating_mul(100));
    }
    let wall = now_ns(libc::CLOCK_REALTIME) / 100 + EPOCH_DIFF;
    now + Duration::from_nanos((due as u64).saturating_sub(wall).saturating_mul(100))
}

/// SetWaitableTimer(Ex)(timer, *due, period ms, completion routine, arg,
/// …): arms the timer and resets its signal. A completion routine (an APC)
/// is refused with ERROR_NOT_SUPPORTED: urun has no APCs.
pub(crate) fn set_waitable_timer(c: &mut Call<'_>) -> Res {
    let (h, due_p, period_ms, routine) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32 as i32, c.arg(3)?);
    if routine != 0 {
        set_error(c, ERROR_NOT_SUPPORTED)?;
        return Ok(0);
    }
    if period_ms < 0 {
        set_error(c, super::kernel32::ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let at = instant_of(c.u64_at(due_p)? as i64);
    let per = (period_ms > 0).then(|| Duration::from_millis(period_ms as u64));
    let r = c.p.objects.with(h, None, |k| match k {
        Kind::Timer { set, due, period, .. } => {
            *set = false;
            *due = Some(at);
            *period = per;
            true
        }
        _ => false,
    });
    if r != Some(true) {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(0);
    }
    Ok(1)
}

/// CancelWaitableTimer(timer): disarms it, leaving its signal as it is.
pub(crate) fn cancel_waitable_timer(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let r = c.p.objects.with(h, None, |k| match k {
        Kind::Timer { due, .. } => {
            *due = None;
            true
        }
        _ => false,
    });
    if r != Some(true) {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(0);
    }
    Ok(1)
}

/// An NT timeout argument: NULL is forever, else a due time as
/// SetWaitableTimer reads it.
fn nt_timeout(c: &Call<'_>, p: u64) -> Result<Option<Duration>, super::abi::Fail> {
    if p == 0 {
        return Ok(None);
    }
    Ok(Some(instant_of(c.u64_at(p)? as i64).saturating_duration_since(Instant::now())))
}

/// NtWaitForSingleObject(handle, alertable, *timeout) → NTSTATUS. The
/// current-process pseudo handle (-1) is never signaled: Go sleeps on it.
pub(crate) fn nt_wait_for_single_object(c: &mut Call<'_>) -> Res {
    let (h, timeout) = (c.arg(0)?, c.arg(2)?);
    let timeout = nt_timeout(c, timeout)?;
    let (tid, cur) = (me(c)?, super::thread::current_obj(c));
    Ok(match c.p.objects.wait(&[h], false, timeout, tid, cur) {
        Waited::Signaled { abandoned: false, .. } => STATUS_SUCCESS,
        Waited::Signaled { abandoned: true, .. } => STATUS_ABANDONED,
        Waited::Timeout => STATUS_TIMEOUT,
        Waited::BadHandle => STATUS_INVALID_HANDLE,
    })
}

/// NtDelayExecution(alertable, *interval) → STATUS_SUCCESS.
pub(crate) fn nt_delay_execution(c: &mut Call<'_>) -> Res {
    let p = c.arg(1)?;
    match nt_timeout(c, p)? {
        Some(d) => std::thread::sleep(d),
        None => loop {
            std::thread::park();
        },
    }
    Ok(STATUS_SUCCESS)
}

/// NtSetTimerResolution(desired, set, *current) / NtQueryTimerResolution(
/// *min, *max, *current): 0.5 ms, as Windows 10 reports at best.
pub(crate) fn nt_set_timer_resolution(c: &mut Call<'_>) -> Res {
    let cur = c.arg(2)?;
    if cur != 0 {
        c.put_u32(cur, 5000)?;
    }
    Ok(STATUS_SUCCESS)
}

pub(crate) fn nt_query_timer_resolution(c: &mut Call<'_>) -> Res {
    for (i, v) in [(0, 156_250u32), (1, 5000), (2, 5000)] {
        let p = c.arg(i)?;
        if p != 0 {
            c.put_u32(p, v)?;
        }
    }
    Ok(STATUS_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_relative_and_absolute() {
        let now = Instant::now();
        // 20 ms relative.
        let rel = instant_of(-200_000);
        assert!(rel >= now + Duration::from_millis(19) && rel <= now + Duration::from_secs(1));
        // An absolute time in the past is now.
        assert!(instant_of(1) <= Instant::now());
        // An absolute time 1 s ahead.
        let wall = now_ns(libc::CLOCK_REALTIME) / 100 + EPOCH_DIFF;
        let abs = instant_of((wall + 10_000_000) as i64);
        assert!(abs >= now + Duration::from_millis(900) && abs <= now + Duration::from_millis(1100));
    }
}

#[cfg(test)]
mod object_tests {
    use super::super::sync::{Kind, Objects, Waited};
    use std::time::{Duration, Instant};

    fn timer(o: &Objects, manual: bool, due_ms: u64, period_ms: u64) -> u64 {
        let due = Some(Instant::now() + Duration::from_millis(due_ms));
        let period = (period_ms > 0).then(|| Duration::from_millis(period_ms));
        o.create(Kind::Timer { manual, set: false, due, period }, None).map(|(h, _)| h).unwrap_or(0)
    }

    #[test]
    fn a_wait_ends_when_the_timer_is_due_and_takes_an_auto_reset_signal() {
        let o = Objects::default();
        let h = timer(&o, false, 30, 0);
        let t0 = Instant::now();
        assert_eq!(
            o.wait(&[h], false, Some(Duration::from_secs(5)), 1, None),
            Waited::Signaled { i: 0, abandoned: false }
        );
        assert!(t0.elapsed() >= Duration::from_millis(25), "{:?}", t0.elapsed());
        // Auto-reset and not periodic: a second wait times out.
        assert_eq!(o.wait(&[h], false, Some(Duration::from_millis(20)), 1, None), Waited::Timeout);
    }

    #[test]
    fn manual_timers_stay_signaled_and_periodic_ones_fire_again() {
        let o = Objects::default();
        let m = timer(&o, true, 0, 0);
        for _ in 0..2 {
            assert_eq!(o.wait(&[m], false, Some(Duration::ZERO), 1, None), Waited::Signaled { i: 0, abandoned: false });
        }
        let p = timer(&o, false, 5, 10);
        for _ in 0..3 {
            assert_eq!(
                o.wait(&[p], false, Some(Duration::from_secs(5)), 1, None),
                Waited::Signaled { i: 0, abandoned: false }
            );
        }
    }

    #[test]
    fn a_timer_not_yet_due_times_out() {
        let o = Objects::default();
        let h = timer(&o, false, 10_000, 0);
        assert_eq!(o.wait(&[h], false, Some(Duration::from_millis(20)), 1, None), Waited::Timeout);
    }
}
