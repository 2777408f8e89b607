//! The one table of what urun's system DLLs export: each function's DLL,
//! name, argument kinds and result kind (for `--strace`), and how it is
//! implemented. Binding, `GetProcAddress` and `--strace` all read it.
//! A DLL urun knows but a function it does not list binds to a stub that
//! names the function when called.

use super::abi::Res;
use super::{byhandle as bh, fiber as fb, known as kf, ntfile as nf, sysinfo as si};
use super::{
    console as o, extra as x, files as f, kernel32 as k, loadlib as l, msvcrt as c, seh as e, setjmp as j, stdio as s,
    sync as y, system as sy, thread as t, timers as tm,
};
use super::{cxxeh as ce, fileinfo as fi, iocp as io, suspend as su};

/// The system DLLs urun provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Dll {
    Ntdll,
    Kernel32,
    /// msvcrt.dll; ucrtbase, the api-ms-win-crt-* sets and vcruntime140
    /// (the C++ exception runtime, memcpy and friends; msvcrt.dll exports
    /// them too) resolve to the same functions where they share them.
    Msvcrt,
    /// DLLs urun knows by name and exports nothing from yet: their imports
    /// bind to stubs that name the function when called.
    Other(&'static str),
}

impl Dll {
    /// The DLL an import names (case-insensitive, `.dll` optional), or
    /// None when urun does not provide it.
    pub fn resolve(name: &str) -> Option<Dll> {
        let n = name.to_ascii_lowercase();
        let n = n.strip_suffix(".dll").unwrap_or(&n);
        if n.starts_with("api-ms-win-crt-") {
            return Some(Dll::Msvcrt);
        }
        // The synchronisation API sets (WaitOnAddress and the rest).
        if n.starts_with("api-ms-win-core-synch-") {
            return Some(Dll::Kernel32);
        }
        Some(match n {
            "ntdll" => Dll::Ntdll,
            "kernel32" | "kernelbase" => Dll::Kernel32,
            "msvcrt" | "ucrtbase" | "vcruntime140" => Dll::Msvcrt,
            _ => return KNOWN_EMPTY.iter().find(|k| **k == n).map(|k| Dll::Other(k)),
        })
    }

    /// The name `--strace` shows.
    pub fn short(self) -> &'static str {
        match self {
            Dll::Ntdll => "ntdll",
            Dll::Kernel32 => "kernel32",
            Dll::Msvcrt => "msvcrt",
            Dll::Other(n) => n,
        }
    }
}

/// The DLLs urun knows by name that export a few functions, spelt so the
/// table can name them like the others.
#[allow(non_upper_case_globals)]
impl Dll {
    pub(crate) const Bcryptprimitives: Dll = Dll::Other("bcryptprimitives");
    pub(crate) const Shell32: Dll = Dll::Other("shell32");
    pub(crate) const Combase: Dll = Dll::Other("combase");
    pub(crate) const Userenv: Dll = Dll::Other("userenv");
    pub(crate) const Advapi32: Dll = Dll::Other("advapi32");
    pub(crate) const Winmm: Dll = Dll::Other("winmm");
    pub(crate) const Ws2_32: Dll = Dll::Other("ws2_32");
}

/// DLLs a console program may import from that urun knows by name.
pub(crate) const KNOWN_EMPTY: &[&str] = &[
    "advapi32",
    "user32",
    "gdi32",
    "shell32",
    "ole32",
    "oleaut32",
    "combase",
    "ws2_32",
    "bcrypt",
    "bcryptprimitives",
    "userenv",
    "vcruntime140_1",
    "shlwapi",
    "version",
    "secur32",
    "crypt32",
    "dbghelp",
    "psapi",
    "iphlpapi",
    "winmm",
];

/// An argument's kind, for `--strace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // StrA/StrW: the Windows names
pub(crate) enum A {
    I32,
    U32,
    U64,
    Ptr,
    Handle,
    /// A NUL-terminated narrow (UTF-8 / ANSI) string.
    StrA,
    /// A NUL-terminated UTF-16 string.
    StrW,
    /// `...` or a `va_list`: not shown.
    Va,
}

/// A result's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum R {
    Void,
    I32,
    U32,
    U64,
    Ptr,
    Bool,
    Handle,
    F64,
    /// Does not return (ExitProcess, exit).
    NoReturn,
}

pub(crate) type Handler = fn(&mut super::abi::Call<'_>) -> Res;

/// How an export is implemented.
#[derive(Clone, Copy)]
pub(crate) enum Imp {
    /// On the host: the stub exits to the personality, which runs this.
    Host(Handler),
    /// A data export: the IAT gets the address of this object in the
    /// personality's data area.
    Data(super::DataObj),
}

pub(crate) struct Export {
    pub dll: Dll,
    pub name: &'static str,
    pub args: &'static [A],
    pub ret: R,
    pub imp: Imp,
}

macro_rules! exports {
    ($( $dll:ident $name:literal ( $($a:ident),* ) $r:ident $imp:expr; )*) => {
        pub(crate) static TABLE: &[Export] = &[
            $( Export { dll: Dll::$dll, name: $name, args: &[$(A::$a),*], ret: R::$r, imp: $imp }, )*
        ];
    };
}

use Imp::{Data, Host};

exports! {
    // ----- kernel32 -----
    Kernel32 "ExitProcess"(U32) NoReturn Host(k::exit_process);
    Kernel32 "GetLastError"() U32 Host(k::get_last_error);
    Kernel32 "SetLastError"(U32) Void Host(k::set_last_error);
    Kernel32 "GetStdHandle"(I32) Handle Host(k::get_std_handle);
    Kernel32 "WriteFile"(Handle, Ptr, U32, Ptr, Ptr) Bool Host(k::write_file);
    Kernel32 "ReadFile"(Handle, Ptr, U32, Ptr, Ptr) Bool Host(k::read_file);
    Kernel32 "CloseHandle"(Handle) Bool Host(k::close_handle);
    Kernel32 "GetFileType"(Handle) U32 Host(k::get_file_type);
    Kernel32 "GetStartupInfoA"(Ptr) Void Host(k::get_startup_info);
    Kernel32 "GetStartupInfoW"(Ptr) Void Host(k::get_startup_info);
    Kernel32 "IsDBCSLeadByteEx"(U32, U32) Bool Host(k::zero);
    Kernel32 "MultiByteToWideChar"(U32, U32, Ptr, I32, Ptr, I32) I32 Host(k::multi_byte_to_wide_char);
    Kernel32 "WideCharToMultiByte"(U32, U32, Ptr, I32, Ptr, I32, Ptr, Ptr) I32 Host(k::wide_char_to_multi_byte);
    Kernel32 "VirtualProtect"(Ptr, U64, U32, Ptr) Bool Host(k::virtual_protect);
    Kernel32 "VirtualQuery"(Ptr, Ptr, U64) U64 Host(k::virtual_query);
    Kernel32 "VirtualAlloc"(Ptr, U64, U32, U32) Ptr Host(k::virtual_alloc);
    Kernel32 "VirtualFree"(Ptr, U64, U32) Bool Host(k::virtual_free);
    Kernel32 "GetModuleHandleA"(StrA) Handle Host(l::get_module_handle_a);
    Kernel32 "GetModuleHandleW"(StrW) Handle Host(l::get_module_handle_w);
    Kernel32 "GetModuleHandleExA"(U32, Ptr, Ptr) Bool Host(l::get_module_handle_ex_a);
    Kernel32 "GetModuleHandleExW"(U32, Ptr, Ptr) Bool Host(l::get_module_handle_ex_w);
    Kernel32 "GetProcAddress"(Handle, StrA) Ptr Host(l::get_proc_address);
    Kernel32 "LoadLibraryA"(StrA) Handle Host(l::load_library_a);
    Kernel32 "LoadLibraryW"(StrW) Handle Host(l::load_library_w);
    Kernel32 "LoadLibraryExA"(StrA, Handle, U32) Handle Host(l::load_library_a);
    Kernel32 "LoadLibraryExW"(StrW, Handle, U32) Handle Host(l::load_library_w);
    Kernel32 "FreeLibrary"(Handle) Bool Host(l::free_library);
    Kernel32 "GetModuleFileNameA"(Handle, Ptr, U32) U32 Host(l::get_module_file_name_a);
    Kernel32 "GetModuleFileNameW"(Handle, Ptr, U32) U32 Host(l::get_module_file_name_w);
    Kernel32 "GetCurrentProcess"() Handle Host(k::current_process);
    Kernel32 "GetCurrentThread"() Handle Host(k::current_thread);
    Kernel32 "GetCurrentProcessId"() U32 Host(k::current_process_id);
    Kernel32 "GetCurrentThreadId"() U32 Host(k::current_thread_id);
    Kernel32 "GetProcessHeap"() Handle Host(k::process_heap);
    Kernel32 "HeapAlloc"(Handle, U32, U64) Ptr Host(k::heap_alloc);
    Kernel32 "HeapFree"(Handle, U32, Ptr) Bool Host(k::heap_free);
    Kernel32 "HeapReAlloc"(Handle, U32, Ptr, U64) Ptr Host(k::heap_realloc);
    Kernel32 "GetCommandLineA"() Ptr Host(k::command_line_a);
    Kernel32 "GetEnvironmentVariableA"(StrA, Ptr, U32) U32 Host(k::get_environment_variable_a);
    Kernel32 "QueryPerformanceCounter"(Ptr) Bool Host(k::query_performance_counter);
    Kernel32 "QueryPerformanceFrequency"(Ptr) Bool Host(k::query_performance_frequency);
    Kernel32 "GetSystemTimeAsFileTime"(Ptr) Void Host(k::system_time_as_file_time);
    Kernel32 "GetTickCount"() U32 Host(k::tick_count);
    Kernel32 "LocalAlloc"(U32, U64) Ptr Host(x::local_alloc);
    Kernel32 "LocalFree"(Ptr) Ptr Host(x::local_free);
    Kernel32 "GlobalAlloc"(U32, U64) Ptr Host(x::local_alloc);
    Kernel32 "GlobalFree"(Ptr) Ptr Host(x::local_free);
    Kernel32 "GetACP"() U32 Host(x::utf8_code_page);
    Kernel32 "GetOEMCP"() U32 Host(x::utf8_code_page);
    Kernel32 "GetConsoleOutputCP"() U32 Host(x::utf8_code_page);
    Kernel32 "GetConsoleCP"() U32 Host(x::utf8_code_page);
    Kernel32 "IsValidCodePage"(U32) Bool Host(x::is_valid_code_page);
    Kernel32 "GetCPInfo"(U32, Ptr) Bool Host(x::get_cp_info);
    Kernel32 "GetThreadLocale"() U32 Host(x::thread_locale);
    Kernel32 "GetUserDefaultLCID"() U32 Host(x::thread_locale);
    Kernel32 "GetVersionExA"(Ptr) Bool Host(x::get_version_ex);
    Kernel32 "GetVersionExW"(Ptr) Bool Host(x::get_version_ex);
    Kernel32 "CreateFileA"(StrA, U32, U32, Ptr, U32, U32, Handle) Handle Host(f::create_file_a);
    Kernel32 "CreateFileW"(StrW, U32, U32, Ptr, U32, U32, Handle) Handle Host(f::create_file_w);
    Kernel32 "GetFileSize"(Handle, Ptr) U32 Host(f::get_file_size);
    Kernel32 "GetFileSizeEx"(Handle, Ptr) Bool Host(f::get_file_size_ex);
    Kernel32 "SetFilePointer"(Handle, I32, Ptr, U32) U32 Host(f::set_file_pointer);
    Kernel32 "SetFilePointerEx"(Handle, U64, Ptr, U32) Bool Host(f::set_file_pointer_ex);
    Kernel32 "FindFirstFileA"(StrA, Ptr) Handle Host(f::find_first_file_a);
    Kernel32 "FindFirstFileW"(StrW, Ptr) Handle Host(f::find_first_file_w);
    Kernel32 "FindNextFileA"(Handle, Ptr) Bool Host(f::find_next_file_a);
    Kernel32 "FindNextFileW"(Handle, Ptr) Bool Host(f::find_next_file_w);
    Kernel32 "FindClose"(Handle) Bool Host(f::find_close);
    Kernel32 "GetFullPathNameA"(StrA, U32, Ptr, Ptr) U32 Host(f::get_full_path_name_a);
    Kernel32 "GetFullPathNameW"(StrW, U32, Ptr, Ptr) U32 Host(f::get_full_path_name_w);
    Kernel32 "GetCurrentDirectoryA"(U32, Ptr) U32 Host(f::get_current_directory_a);
    Kernel32 "GetCurrentDirectoryW"(U32, Ptr) U32 Host(f::get_current_directory_w);
    Kernel32 "SetCurrentDirectoryA"(StrA) Bool Host(f::set_current_directory_a);
    Kernel32 "SetCurrentDirectoryW"(StrW) Bool Host(f::set_current_directory_w);
    Kernel32 "GetFileAttributesA"(StrA) U32 Host(f::get_file_attributes_a);
    Kernel32 "GetFileAttributesW"(StrW) U32 Host(f::get_file_attributes_w);
    Kernel32 "DeleteFileA"(StrA) Bool Host(f::delete_file_a);
    Kernel32 "DeleteFileW"(StrW) Bool Host(f::delete_file_w);
    Kernel32 "CreateDirectoryA"(StrA, Ptr) Bool Host(f::create_directory_a);
    Kernel32 "CreateDirectoryW"(StrW, Ptr) Bool Host(f::create_directory_w);
    Kernel32 "RemoveDirectoryA"(StrA) Bool Host(f::remove_directory_a);
    Kernel32 "RemoveDirectoryW"(StrW) Bool Host(f::remove_directory_w);
    Kernel32 "GetTempPathA"(U32, Ptr) U32 Host(f::get_temp_path_a);
    Kernel32 "GetTempPathW"(U32, Ptr) U32 Host(f::get_temp_path_w);
    Kernel32 "WriteConsoleA"(Handle, Ptr, U32, Ptr, Ptr) Bool Host(o::write_console_a);
    Kernel32 "WriteConsoleW"(Handle, Ptr, U32, Ptr, Ptr) Bool Host(o::write_console_w);
    Kernel32 "GetConsoleMode"(Handle, Ptr) Bool Host(o::get_console_mode);
    Kernel32 "SetConsoleMode"(Handle, U32) Bool Host(o::set_console_mode);
    Kernel32 "SetConsoleOutputCP"(U32) Bool Host(o::set_console_cp);
    Kernel32 "SetConsoleCP"(U32) Bool Host(o::set_console_cp);
    Kernel32 "GetCommandLineW"() Ptr Host(o::get_command_line_w);
    Kernel32 "GetEnvironmentStringsW"() Ptr Host(o::get_environment_strings_w);
    Kernel32 "GetEnvironmentStrings"() Ptr Host(o::get_environment_strings_a);
    Kernel32 "GetEnvironmentStringsA"() Ptr Host(o::get_environment_strings_a);
    Kernel32 "FreeEnvironmentStringsA"(Ptr) Bool Host(o::free_environment_strings);
    Kernel32 "FreeEnvironmentStringsW"(Ptr) Bool Host(o::free_environment_strings);
    Kernel32 "GetEnvironmentVariableW"(StrW, Ptr, U32) U32 Host(o::get_environment_variable_w);
    // ----- exceptions (seh.rs): kernel32 forwards these to ntdll -----
    Kernel32 "SetUnhandledExceptionFilter"(Ptr) Ptr Host(e::set_unhandled_filter);
    Kernel32 "UnhandledExceptionFilter"(Ptr) I32 Host(e::unhandled_exception_filter);
    Kernel32 "AddVectoredExceptionHandler"(U32, Ptr) Ptr Host(e::add_veh);
    Kernel32 "RemoveVectoredExceptionHandler"(Ptr) U32 Host(e::remove_veh);
    Kernel32 "AddVectoredContinueHandler"(U32, Ptr) Ptr Host(e::add_vch);
    Kernel32 "RemoveVectoredContinueHandler"(Ptr) U32 Host(e::remove_vch);
    // Returns only by resuming a context: shown as not returning.
    Kernel32 "RaiseException"(U32, U32, U32, Ptr) NoReturn Host(e::raise_exception);
    Kernel32 "RtlCaptureContext"(Ptr) Void Host(e::capture_context);
    Kernel32 "RtlLookupFunctionEntry"(Ptr, Ptr, Ptr) Ptr Host(e::lookup_function_entry);
    Kernel32 "RtlVirtualUnwind"(U32, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr) Ptr Host(e::virtual_unwind);
    Kernel32 "RtlUnwindEx"(Ptr, Ptr, Ptr, Ptr, Ptr, Ptr) NoReturn Host(e::rtl_unwind_ex);
    Kernel32 "RtlUnwind"(Ptr, Ptr, Ptr, Ptr) NoReturn Host(e::rtl_unwind);
    Kernel32 "RtlRestoreContext"(Ptr, Ptr) NoReturn Host(e::restore_context);
    Kernel32 "RtlAddFunctionTable"(Ptr, U32, Ptr) Bool Host(e::add_function_table);
    Kernel32 "RtlDeleteFunctionTable"(Ptr) Bool Host(e::delete_function_table);
    Kernel32 "RtlPcToFileHeader"(Ptr, Ptr) Ptr Host(e::pc_to_file_header);
    Ntdll "RtlAddVectoredExceptionHandler"(U32, Ptr) Ptr Host(e::add_veh);
    Ntdll "RtlRemoveVectoredExceptionHandler"(Ptr) U32 Host(e::remove_veh);
    Ntdll "RtlAddVectoredContinueHandler"(U32, Ptr) Ptr Host(e::add_vch);
    Ntdll "RtlRemoveVectoredContinueHandler"(Ptr) U32 Host(e::remove_vch);
    Ntdll "RtlRaiseException"(Ptr) NoReturn Host(e::rtl_raise_exception);
    Ntdll "RtlCaptureContext"(Ptr) Void Host(e::capture_context);
    Ntdll "RtlLookupFunctionEntry"(Ptr, Ptr, Ptr) Ptr Host(e::lookup_function_entry);
    Ntdll "RtlVirtualUnwind"(U32, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr) Ptr Host(e::virtual_unwind);
    Ntdll "RtlUnwindEx"(Ptr, Ptr, Ptr, Ptr, Ptr, Ptr) NoReturn Host(e::rtl_unwind_ex);
    Ntdll "RtlUnwind"(Ptr, Ptr, Ptr, Ptr) NoReturn Host(e::rtl_unwind);
    Ntdll "RtlRestoreContext"(Ptr, Ptr) NoReturn Host(e::restore_context);
    Ntdll "NtContinue"(Ptr, U32) NoReturn Host(e::nt_continue);
    Ntdll "RtlAddFunctionTable"(Ptr, U32, Ptr) Bool Host(e::add_function_table);
    Ntdll "RtlDeleteFunctionTable"(Ptr) Bool Host(e::delete_function_table);
    Ntdll "RtlPcToFileHeader"(Ptr, Ptr) Ptr Host(e::pc_to_file_header);
    Ntdll "__C_specific_handler"(Ptr, Ptr, Ptr, Ptr) I32 Host(e::c_specific_handler);
    // ----- what Go's runtime asks for (timers.rs, iocp.rs, system.rs) -----
    Kernel32 "CreateWaitableTimerA"(Ptr, U32, StrA) Handle Host(tm::create_waitable_timer_a);
    Kernel32 "CreateWaitableTimerW"(Ptr, U32, StrW) Handle Host(tm::create_waitable_timer_w);
    Kernel32 "CreateWaitableTimerExA"(Ptr, StrA, U32, U32) Handle Host(tm::create_waitable_timer_ex_a);
    Kernel32 "CreateWaitableTimerExW"(Ptr, StrW, U32, U32) Handle Host(tm::create_waitable_timer_ex_w);
    Kernel32 "SetWaitableTimer"(Handle, Ptr, I32, Ptr, Ptr, U32) Bool Host(tm::set_waitable_timer);
    Kernel32 "SetWaitableTimerEx"(Handle, Ptr, I32, Ptr, Ptr, Ptr, U32) Bool Host(tm::set_waitable_timer);
    Kernel32 "CancelWaitableTimer"(Handle) Bool Host(tm::cancel_waitable_timer);
    Ntdll "NtWaitForSingleObject"(Handle, U32, Ptr) U32 Host(tm::nt_wait_for_single_object);
    Ntdll "NtDelayExecution"(U32, Ptr) U32 Host(tm::nt_delay_execution);
    Ntdll "NtSetTimerResolution"(U32, U32, Ptr) U32 Host(tm::nt_set_timer_resolution);
    Ntdll "NtQueryTimerResolution"(Ptr, Ptr, Ptr) U32 Host(tm::nt_query_timer_resolution);
    Winmm "timeBeginPeriod"(U32) U32 Host(k::zero);
    Winmm "timeEndPeriod"(U32) U32 Host(k::zero);
    Kernel32 "CreateIoCompletionPort"(Handle, Handle, U64, U32) Handle Host(io::create_io_completion_port);
    Kernel32 "PostQueuedCompletionStatus"(Handle, U32, U64, Ptr) Bool Host(io::post_queued_completion_status);
    Kernel32 "GetQueuedCompletionStatus"(Handle, Ptr, Ptr, Ptr, U32) Bool Host(io::get_queued_completion_status);
    Kernel32 "GetQueuedCompletionStatusEx"(Handle, Ptr, U32, Ptr, U32, U32) Bool Host(io::get_queued_completion_status_ex);
    Kernel32 "GetSystemInfo"(Ptr) Void Host(sy::get_system_info);
    Kernel32 "GetNativeSystemInfo"(Ptr) Void Host(sy::get_system_info);
    Kernel32 "GetSystemDirectoryA"(Ptr, U32) U32 Host(sy::get_system_directory_a);
    Kernel32 "GetSystemDirectoryW"(Ptr, U32) U32 Host(sy::get_system_directory_w);
    Kernel32 "GetWindowsDirectoryA"(Ptr, U32) U32 Host(sy::get_windows_directory_a);
    Kernel32 "GetWindowsDirectoryW"(Ptr, U32) U32 Host(sy::get_windows_directory_w);
    Kernel32 "AddDllDirectory"(StrW) Ptr Host(sy::add_dll_directory);
    Kernel32 "RemoveDllDirectory"(Ptr) Bool Host(k::one);
    Kernel32 "SetDefaultDllDirectories"(U32) Bool Host(k::one);
    Kernel32 "SetErrorMode"(U32) U32 Host(sy::set_error_mode);
    // No console events are delivered: a handler is accepted and never called.
    Kernel32 "SetConsoleCtrlHandler"(Ptr, U32) Bool Host(k::one);
    Kernel32 "SetProcessPriorityBoost"(Handle, U32) Bool Host(k::one);
    Kernel32 "GetThreadContext"(Handle, Ptr) Bool Host(su::get_thread_context);
    Kernel32 "SetThreadContext"(Handle, Ptr) Bool Host(su::set_thread_context);
    Ntdll "RtlGetCurrentPeb"() Ptr Host(sy::rtl_get_current_peb);
    Ntdll "RtlGetNtVersionNumbers"(Ptr, Ptr, Ptr) Void Host(sy::rtl_get_nt_version_numbers);
    Advapi32 "SystemFunction036"(Ptr, U32) Bool Host(sy::rtl_gen_random);
    Kernel32 "GetFileInformationByHandle"(Handle, Ptr) Bool Host(fi::get_file_information_by_handle);
    Kernel32 "GetFileAttributesExA"(StrA, U32, Ptr) Bool Host(fi::get_file_attributes_ex_a);
    Kernel32 "GetFileAttributesExW"(StrW, U32, Ptr) Bool Host(fi::get_file_attributes_ex_w);
    Ws2_32 "WSAStartup"(U32, Ptr) I32 Host(sy::wsa_startup);
    Ws2_32 "WSACleanup"() I32 Host(k::zero);
    Kernel32 "FormatMessageA"(U32, Ptr, U32, U32, Ptr, U32, Va) U32 Host(sy::format_message);
    Kernel32 "FormatMessageW"(U32, Ptr, U32, U32, Ptr, U32, Va) U32 Host(sy::format_message);
    Ws2_32 "WSAGetOverlappedResult"(Handle, Ptr, Ptr, U32, Ptr) Bool Host(sy::wsa_get_overlapped_result);
    Kernel32 "GetTickCount64"() U64 Host(k::tick_count64);
    // ----- kernel32: threads (thread.rs) -----
    Kernel32 "CreateThread"(Ptr, U64, Ptr, Ptr, U32, Ptr) Handle Host(t::create_thread);
    Kernel32 "ExitThread"(U32) NoReturn Host(t::exit_thread);
    Kernel32 "GetExitCodeThread"(Handle, Ptr) Bool Host(t::get_exit_code_thread);
    Kernel32 "GetThreadId"(Handle) U32 Host(t::get_thread_id);
    Kernel32 "ResumeThread"(Handle) U32 Host(t::resume_thread);
    Kernel32 "SuspendThread"(Handle) U32 Host(t::suspend_thread);
    Kernel32 "SetThreadPriority"(Handle, I32) Bool Host(t::set_thread_priority);
    Kernel32 "GetThreadPriority"(Handle) I32 Host(t::get_thread_priority);
    Kernel32 "SwitchToThread"() Bool Host(t::switch_to_thread);
    Kernel32 "Sleep"(U32) Void Host(t::sleep);
    Kernel32 "SleepEx"(U32, I32) U32 Host(t::sleep);
    Kernel32 "GetProcessAffinityMask"(Handle, Ptr, Ptr) Bool Host(t::get_process_affinity_mask);
    Kernel32 "TlsAlloc"() U32 Host(t::tls_alloc);
    Kernel32 "TlsFree"(U32) Bool Host(t::tls_free);
    Kernel32 "TlsGetValue"(U32) Ptr Host(t::tls_get_value);
    Kernel32 "TlsSetValue"(U32, Ptr) Bool Host(t::tls_set_value);
    Kernel32 "FlsAlloc"(Ptr) U32 Host(t::fls_alloc);
    Kernel32 "FlsFree"(U32) Bool Host(t::fls_free);
    Kernel32 "FlsGetValue"(U32) Ptr Host(t::fls_get_value);
    Kernel32 "FlsSetValue"(U32, Ptr) Bool Host(t::fls_set_value);
    // ----- kernel32: synchronisation (sync.rs) -----
    Kernel32 "InitializeCriticalSection"(Ptr) Void Host(y::init_critical_section);
    Kernel32 "InitializeCriticalSectionAndSpinCount"(Ptr, U32) Bool Host(y::init_critical_section_spin);
    Kernel32 "InitializeCriticalSectionEx"(Ptr, U32, U32) Bool Host(y::init_critical_section_spin);
    Kernel32 "DeleteCriticalSection"(Ptr) Void Host(k::nothing);
    Kernel32 "EnterCriticalSection"(Ptr) Void Host(y::enter_critical_section);
    Kernel32 "TryEnterCriticalSection"(Ptr) Bool Host(y::try_enter_critical_section);
    Kernel32 "LeaveCriticalSection"(Ptr) Void Host(y::leave_critical_section);
    Kernel32 "InitializeSRWLock"(Ptr) Void Host(y::init_srw_lock);
    Kernel32 "AcquireSRWLockExclusive"(Ptr) Void Host(y::acquire_srw_exclusive);
    Kernel32 "AcquireSRWLockShared"(Ptr) Void Host(y::acquire_srw_shared);
    Kernel32 "TryAcquireSRWLockExclusive"(Ptr) Bool Host(y::try_acquire_srw_exclusive);
    Kernel32 "TryAcquireSRWLockShared"(Ptr) Bool Host(y::try_acquire_srw_shared);
    Kernel32 "ReleaseSRWLockExclusive"(Ptr) Void Host(y::release_srw_exclusive);
    Kernel32 "ReleaseSRWLockShared"(Ptr) Void Host(y::release_srw_shared);
    Kernel32 "InitializeConditionVariable"(Ptr) Void Host(y::init_condition_variable);
    Kernel32 "SleepConditionVariableCS"(Ptr, Ptr, U32) Bool Host(y::sleep_condition_variable_cs);
    Kernel32 "SleepConditionVariableSRW"(Ptr, Ptr, U32, U32) Bool Host(y::sleep_condition_variable_srw);
    Kernel32 "WakeConditionVariable"(Ptr) Void Host(y::wake_condition_variable);
    Kernel32 "WakeAllConditionVariable"(Ptr) Void Host(y::wake_all_condition_variable);
    Kernel32 "InitOnceInitialize"(Ptr) Void Host(y::init_srw_lock);
    Kernel32 "InitOnceExecuteOnce"(Ptr, Ptr, Ptr, Ptr) Bool Host(y::init_once_execute_once);
    Kernel32 "InitOnceBeginInitialize"(Ptr, U32, Ptr, Ptr) Bool Host(y::init_once_begin_initialize);
    Kernel32 "InitOnceComplete"(Ptr, U32, Ptr) Bool Host(y::init_once_complete);
    Kernel32 "WaitOnAddress"(Ptr, Ptr, U64, U32) Bool Host(y::wait_on_address);
    Kernel32 "WakeByAddressSingle"(Ptr) Void Host(y::wake_by_address);
    Kernel32 "WakeByAddressAll"(Ptr) Void Host(y::wake_by_address);
    Kernel32 "CreateEventA"(Ptr, I32, I32, StrA) Handle Host(y::create_event_a);
    Kernel32 "CreateEventW"(Ptr, I32, I32, StrW) Handle Host(y::create_event_w);
    Kernel32 "CreateEventExA"(Ptr, StrA, U32, U32) Handle Host(y::create_event_ex_a);
    Kernel32 "CreateEventExW"(Ptr, StrW, U32, U32) Handle Host(y::create_event_ex_w);
    Kernel32 "SetEvent"(Handle) Bool Host(y::set_event);
    Kernel32 "ResetEvent"(Handle) Bool Host(y::reset_event);
    Kernel32 "CreateMutexA"(Ptr, I32, StrA) Handle Host(y::create_mutex_a);
    Kernel32 "CreateMutexW"(Ptr, I32, StrW) Handle Host(y::create_mutex_w);
    Kernel32 "ReleaseMutex"(Handle) Bool Host(y::release_mutex);
    Kernel32 "CreateSemaphoreA"(Ptr, I32, I32, StrA) Handle Host(y::create_semaphore_a);
    Kernel32 "CreateSemaphoreW"(Ptr, I32, I32, StrW) Handle Host(y::create_semaphore_w);
    Kernel32 "ReleaseSemaphore"(Handle, I32, Ptr) Bool Host(y::release_semaphore);
    Kernel32 "WaitForSingleObject"(Handle, U32) U32 Host(y::wait_for_single_object);
    Kernel32 "WaitForSingleObjectEx"(Handle, U32, I32) U32 Host(y::wait_for_single_object);
    Kernel32 "WaitForMultipleObjects"(U32, Ptr, I32, U32) U32 Host(y::wait_for_multiple_objects);
    Kernel32 "WaitForMultipleObjectsEx"(U32, Ptr, I32, U32, I32) U32 Host(y::wait_for_multiple_objects);
    Kernel32 "DuplicateHandle"(Handle, Handle, Handle, Ptr, U32, I32, U32) Bool Host(y::duplicate_handle);
    Kernel32 "GetHandleInformation"(Handle, Ptr) Bool Host(y::get_handle_information);
    Kernel32 "InitializeSListHead"(Ptr) Void Host(y::initialize_slist_head);
    Kernel32 "InterlockedPushEntrySList"(Ptr, Ptr) Ptr Host(y::interlocked_push_entry_slist);
    Kernel32 "InterlockedPushListSListEx"(Ptr, Ptr, Ptr, U32) Ptr Host(y::interlocked_push_list_slist);
    Kernel32 "InterlockedPopEntrySList"(Ptr) Ptr Host(y::interlocked_pop_entry_slist);
    Kernel32 "InterlockedFlushSList"(Ptr) Ptr Host(y::interlocked_flush_slist);
    Kernel32 "QueryDepthSList"(Ptr) U32 Host(y::query_depth_slist);
    // ----- msvcrt (and ucrtbase) -----
    Msvcrt "_beginthreadex"(Ptr, U32, Ptr, Ptr, U32, Ptr) Ptr Host(t::begin_thread_ex);
    Msvcrt "_beginthread"(Ptr, U32, Ptr) Ptr Host(t::begin_thread);
    Msvcrt "_endthreadex"(U32) NoReturn Host(t::exit_thread);
    Msvcrt "_endthread"() NoReturn Host(t::end_thread);
    Msvcrt "_setjmp"(Ptr, Ptr) I32 Host(j::setjmp);
    Msvcrt "_setjmpex"(Ptr, Ptr) I32 Host(j::setjmp);
    Msvcrt "longjmp"(Ptr, I32) NoReturn Host(j::longjmp);
    Msvcrt "__getmainargs"(Ptr, Ptr, Ptr, I32, Ptr) I32 Host(c::getmainargs);
    Msvcrt "__wgetmainargs"(Ptr, Ptr, Ptr, I32, Ptr) I32 Host(o::wgetmainargs);
    Msvcrt "_wfopen"(StrW, StrW) Ptr Host(o::wfopen);
    Msvcrt "__set_app_type"(I32) Void Host(k::nothing);
    Msvcrt "_set_app_type"(I32) Void Host(k::nothing);
    Msvcrt "__setusermatherr"(Ptr) Void Host(k::nothing);
    Msvcrt "__iob_func"() Ptr Host(c::iob_func);
    Msvcrt "__p__fmode"() Ptr Host(c::p_fmode);
    Msvcrt "__p__commode"() Ptr Host(c::p_commode);
    Msvcrt "___lc_codepage_func"() U32 Host(k::zero);
    Msvcrt "___mb_cur_max_func"() I32 Host(k::one);
    Msvcrt "__C_specific_handler"(Ptr, Ptr, Ptr, Ptr) I32 Host(e::c_specific_handler);
    // The MSVC C++ runtime (cxxeh.rs). __CxxCallCatchBlock is the callback
    // of the unwind to a catch block, as in MSVC's runtime.
    Msvcrt "_CxxThrowException"(Ptr, Ptr) NoReturn Host(ce::cxx_throw_exception);
    Msvcrt "__CxxFrameHandler3"(Ptr, Ptr, Ptr, Ptr) I32 Host(ce::cxx_frame_handler3);
    Msvcrt "__CxxFrameHandler"(Ptr, Ptr, Ptr, Ptr) I32 Host(ce::cxx_frame_handler3);
    Msvcrt "__CxxCallCatchBlock"(Ptr) Ptr Host(ce::call_catch_block);
    Msvcrt "__std_terminate"() NoReturn Host(ce::std_terminate);
    Msvcrt "terminate"() NoReturn Host(ce::std_terminate);
    Msvcrt "__std_exception_copy"(Ptr, Ptr) Void Host(ce::std_exception_copy);
    Msvcrt "__std_exception_destroy"(Ptr) Void Host(ce::std_exception_destroy);
    Msvcrt "_initterm"(Ptr, Ptr) Void Host(c::initterm);
    Msvcrt "_initterm_e"(Ptr, Ptr) I32 Host(c::initterm_e);
    Msvcrt "_onexit"(Ptr) Ptr Host(c::onexit);
    Msvcrt "atexit"(Ptr) I32 Host(c::atexit);
    Msvcrt "_crt_atexit"(Ptr) I32 Host(c::atexit);
    Msvcrt "_cexit"() Void Host(c::cexit);
    Msvcrt "_amsg_exit"(I32) NoReturn Host(c::amsg_exit);
    Msvcrt "_lock"(I32) Void Host(k::nothing);
    Msvcrt "_unlock"(I32) Void Host(k::nothing);
    Msvcrt "_errno"() Ptr Host(c::errno_ptr);
    Msvcrt "abort"() NoReturn Host(c::abort);
    Msvcrt "exit"(I32) NoReturn Host(c::exit);
    Msvcrt "_exit"(I32) NoReturn Host(c::quick_exit);
    Msvcrt "signal"(I32, Ptr) Ptr Host(k::zero);
    Msvcrt "localeconv"() Ptr Host(c::localeconv);
    Msvcrt "strerror"(I32) Ptr Host(c::strerror);
    Msvcrt "malloc"(U64) Ptr Host(c::malloc);
    Msvcrt "calloc"(U64, U64) Ptr Host(c::calloc);
    Msvcrt "realloc"(Ptr, U64) Ptr Host(c::realloc);
    Msvcrt "free"(Ptr) Void Host(c::free);
    Msvcrt "_strdup"(StrA) Ptr Host(c::strdup);
    Msvcrt "memcpy"(Ptr, Ptr, U64) Ptr Host(c::memmove);
    Msvcrt "memmove"(Ptr, Ptr, U64) Ptr Host(c::memmove);
    Msvcrt "memset"(Ptr, I32, U64) Ptr Host(c::memset);
    Msvcrt "memcmp"(Ptr, Ptr, U64) I32 Host(c::memcmp);
    Msvcrt "strlen"(StrA) U64 Host(c::strlen);
    Msvcrt "wcslen"(StrW) U64 Host(c::wcslen);
    Msvcrt "strcmp"(StrA, StrA) I32 Host(c::strcmp);
    Msvcrt "strncmp"(StrA, StrA, U64) I32 Host(c::strncmp);
    Msvcrt "strcpy"(Ptr, StrA) Ptr Host(c::strcpy);
    Msvcrt "strcat"(Ptr, StrA) Ptr Host(c::strcat);
    Msvcrt "strchr"(StrA, I32) Ptr Host(c::strchr);
    Msvcrt "strrchr"(StrA, I32) Ptr Host(c::strrchr);
    Msvcrt "strtol"(StrA, Ptr, I32) I32 Host(c::strtol);
    Msvcrt "strtoul"(StrA, Ptr, I32) U32 Host(c::strtoul);
    Msvcrt "atoi"(StrA) I32 Host(c::atoi);
    Msvcrt "getenv"(StrA) Ptr Host(c::getenv);
    Msvcrt "qsort"(Ptr, U64, U64, Ptr) Void Host(c::qsort);
    Msvcrt "_access"(StrA, I32) I32 Host(x::access);
    Msvcrt "setlocale"(I32, StrA) Ptr Host(x::setlocale);
    Msvcrt "_stricmp"(StrA, StrA) I32 Host(x::stricmp);
    Msvcrt "_strnicmp"(StrA, StrA, U64) I32 Host(x::strnicmp);
    Msvcrt "strncpy"(Ptr, StrA, U64) Ptr Host(x::strncpy);
    Msvcrt "strstr"(StrA, StrA) Ptr Host(x::strstr);
    Msvcrt "strspn"(StrA, StrA) U64 Host(x::strspn);
    Msvcrt "strcspn"(StrA, StrA) U64 Host(x::strcspn);
    Msvcrt "strpbrk"(StrA, StrA) Ptr Host(x::strpbrk);
    Msvcrt "memchr"(Ptr, I32, U64) Ptr Host(x::memchr);
    Msvcrt "isalnum"(I32) I32 Host(x::isalnum);
    Msvcrt "isalpha"(I32) I32 Host(x::isalpha);
    Msvcrt "iscntrl"(I32) I32 Host(x::iscntrl);
    Msvcrt "isspace"(I32) I32 Host(x::isspace);
    Msvcrt "isxdigit"(I32) I32 Host(x::isxdigit);
    Msvcrt "_getpid"() I32 Host(x::getpid);
    Msvcrt "_isatty"(I32) I32 Host(x::isatty);
    Msvcrt "_time64"(Ptr) U64 Host(x::time64);
    Msvcrt "clock"() I32 Host(x::clock);
    Msvcrt "_acmdln"() Ptr Data(super::DataObj::Acmdln);
    Msvcrt "__initenv"() Ptr Data(super::DataObj::Initenv);
    Msvcrt "_environ"() Ptr Data(super::DataObj::Initenv);
    Msvcrt "_fmode"() Ptr Data(super::DataObj::Fmode);
    Msvcrt "_commode"() Ptr Data(super::DataObj::Commode);
    Msvcrt "_iob"() Ptr Data(super::DataObj::Iob);
    Msvcrt "_wcmdln"() Ptr Data(super::DataObj::Wcmdln);
    Msvcrt "__winitenv"() Ptr Data(super::DataObj::Winitenv);
    Msvcrt "wcscmp"(StrW, StrW) I32 Host(x::wcscmp);
    Msvcrt "wcsncmp"(StrW, StrW, U64) I32 Host(x::wcsncmp);
    Msvcrt "_wcsicmp"(StrW, StrW) I32 Host(x::wcsicmp);
    Msvcrt "_wcsnicmp"(StrW, StrW, U64) I32 Host(x::wcsnicmp);
    Msvcrt "wcscpy"(Ptr, StrW) Ptr Host(x::wcscpy);
    Msvcrt "wcscat"(Ptr, StrW) Ptr Host(x::wcscat);
    // ucrtbase (through the api-ms-win-crt-* sets)
    Msvcrt "__p___argc"() Ptr Host(c::p_argc);
    Msvcrt "__p___argv"() Ptr Host(c::p_argv);
    Msvcrt "__p__environ"() Ptr Host(c::p_environ);
    Msvcrt "__p__acmdln"() Ptr Host(c::p_acmdln);
    Msvcrt "_configure_narrow_argv"(I32) I32 Host(k::zero);
    Msvcrt "_initialize_narrow_environment"() I32 Host(k::zero);
    Msvcrt "_set_new_mode"(I32) I32 Host(k::zero);
    Msvcrt "_set_invalid_parameter_handler"(Ptr) Ptr Host(k::zero);
    Msvcrt "_crt_at_quick_exit"(Ptr) I32 Host(k::zero);
    Msvcrt "__acrt_iob_func"(U32) Ptr Host(s::acrt_iob_func);
    Msvcrt "__stdio_common_vfprintf"(U64, Ptr, StrA, Ptr, Va) I32 Host(s::common_vfprintf);
    Msvcrt "__stdio_common_vsprintf"(U64, Ptr, U64, StrA, Ptr, Va) I32 Host(s::common_vsprintf);
    // stdio
    Msvcrt "fopen"(StrA, StrA) Ptr Host(s::fopen);
    Msvcrt "fclose"(Ptr) I32 Host(s::fclose);
    Msvcrt "fflush"(Ptr) I32 Host(s::fflush);
    Msvcrt "fputc"(I32, Ptr) I32 Host(s::fputc);
    Msvcrt "putc"(I32, Ptr) I32 Host(s::fputc);
    Msvcrt "putchar"(I32) I32 Host(s::putchar);
    Msvcrt "fputs"(StrA, Ptr) I32 Host(s::fputs);
    Msvcrt "puts"(StrA) I32 Host(s::puts);
    Msvcrt "fwrite"(Ptr, U64, U64, Ptr) U64 Host(s::fwrite);
    Msvcrt "fread"(Ptr, U64, U64, Ptr) U64 Host(s::fread);
    Msvcrt "fgets"(Ptr, I32, Ptr) Ptr Host(s::fgets);
    Msvcrt "fgetc"(Ptr) I32 Host(s::fgetc);
    Msvcrt "getc"(Ptr) I32 Host(s::fgetc);
    Msvcrt "ungetc"(I32, Ptr) I32 Host(s::ungetc);
    Msvcrt "fseek"(Ptr, I32, I32) I32 Host(s::fseek);
    Msvcrt "ftell"(Ptr) I32 Host(s::ftell);
    Msvcrt "rewind"(Ptr) Void Host(s::rewind);
    Msvcrt "feof"(Ptr) I32 Host(s::feof);
    Msvcrt "ferror"(Ptr) I32 Host(s::ferror);
    Msvcrt "_fileno"(Ptr) I32 Host(s::fileno);
    Msvcrt "setvbuf"(Ptr, Ptr, I32, U64) I32 Host(k::zero);
    Msvcrt "_setmode"(I32, I32) I32 Host(s::setmode);
    Msvcrt "remove"(StrA) I32 Host(s::remove);
    Msvcrt "_unlink"(StrA) I32 Host(s::remove);
    Msvcrt "perror"(StrA) Void Host(s::perror);
    Msvcrt "printf"(StrA, Va) I32 Host(s::printf);
    Msvcrt "fprintf"(Ptr, StrA, Va) I32 Host(s::fprintf);
    Msvcrt "vfprintf"(Ptr, StrA, Va) I32 Host(s::vfprintf);
    Msvcrt "vprintf"(StrA, Va) I32 Host(s::vprintf);
    Msvcrt "sprintf"(Ptr, StrA, Va) I32 Host(s::sprintf);
    Msvcrt "snprintf"(Ptr, U64, StrA, Va) I32 Host(s::snprintf);
    Msvcrt "_snprintf"(Ptr, U64, StrA, Va) I32 Host(s::snprintf);
    Msvcrt "vsnprintf"(Ptr, U64, StrA, Va) I32 Host(s::vsnprintf);
    Msvcrt "_vsnprintf"(Ptr, U64, StrA, Va) I32 Host(s::vsnprintf);
    Msvcrt "wprintf"(StrW, Va) I32 Host(s::wprintf);
    Msvcrt "vwprintf"(StrW, Va) I32 Host(s::vwprintf);
    Msvcrt "fwprintf"(Ptr, StrW, Va) I32 Host(s::fwprintf);
    Msvcrt "vfwprintf"(Ptr, StrW, Va) I32 Host(s::vfwprintf);
    Msvcrt "_snwprintf"(Ptr, U64, StrW, Va) I32 Host(s::snwprintf);
    Msvcrt "_vsnwprintf"(Ptr, U64, StrW, Va) I32 Host(s::vsnwprintf);
    Msvcrt "fputws"(StrW, Ptr) I32 Host(s::fputws);
    Msvcrt "fputwc"(I32, Ptr) I32 Host(s::fputwc);
    Msvcrt "putwc"(I32, Ptr) I32 Host(s::fputwc);
    // ----- what MSVC-built Rust programs (ruff) use (sysinfo.rs, ntfile.rs) -----
    Kernel32 "SetThreadStackGuarantee"(Ptr) Bool Host(si::set_thread_stack_guarantee);
    Kernel32 "IsProcessorFeaturePresent"(U32) Bool Host(si::is_processor_feature_present);
    Kernel32 "GetCurrentProcessorNumber"() U32 Host(si::current_processor_number);
    Kernel32 "GetSystemTimePreciseAsFileTime"(Ptr) Void Host(si::system_time_precise);
    Kernel32 "EncodePointer"(Ptr) Ptr Host(si::identity);
    Kernel32 "DecodePointer"(Ptr) Ptr Host(si::identity);
    Kernel32 "IsDebuggerPresent"() Bool Host(k::zero);
    Kernel32 "lstrlenW"(StrW) I32 Host(si::lstrlen_w);
    Kernel32 "CompareStringOrdinal"(Ptr, I32, Ptr, I32, I32) I32 Host(si::compare_string_ordinal);
    Bcryptprimitives "ProcessPrng"(Ptr, U64) Bool Host(si::process_prng);
    Ntdll "NtWriteFile"(Handle, Handle, Ptr, Ptr, Ptr, Ptr, U32, Ptr, Ptr) U32 Host(nf::nt_write_file);
    Ntdll "NtReadFile"(Handle, Handle, Ptr, Ptr, Ptr, Ptr, U32, Ptr, Ptr) U32 Host(nf::nt_read_file);
    Ntdll "RtlNtStatusToDosError"(U32) U32 Host(nf::rtl_nt_status_to_dos_error);
    Kernel32 "GetFileInformationByHandleEx"(Handle, U32, Ptr, U32) Bool Host(bh::get_file_information_by_handle_ex);
    Kernel32 "GetFinalPathNameByHandleW"(Handle, Ptr, U32, U32) U32 Host(bh::get_final_path_name_by_handle_w);
    Kernel32 "FindFirstFileExW"(StrW, U32, Ptr, U32, Ptr, U32) Handle Host(bh::find_first_file_ex_w);
    Kernel32 "FlushFileBuffers"(Handle) Bool Host(bh::flush_file_buffers);
    // Until real waitable timers land (Go's branch): NULL, on which Rust's
    // std::thread::sleep falls back to Sleep.
    Kernel32 "IsThreadAFiber"() Bool Host(fb::is_thread_a_fiber);
    Kernel32 "ConvertThreadToFiber"(Ptr) Ptr Host(fb::convert_thread_to_fiber);
    Kernel32 "ConvertThreadToFiberEx"(Ptr, U32) Ptr Host(fb::convert_thread_to_fiber);
    Kernel32 "ConvertFiberToThread"() Bool Host(fb::convert_fiber_to_thread);
    Kernel32 "CreateFiber"(U64, Ptr, Ptr) Ptr Host(fb::create_fiber);
    Kernel32 "CreateFiberEx"(U64, U64, U32, Ptr, Ptr) Ptr Host(fb::create_fiber_ex);
    Kernel32 "SwitchToFiber"(Ptr) Void Host(fb::switch_to_fiber);
    Kernel32 "DeleteFiber"(Ptr) Void Host(fb::delete_fiber);
    Userenv "GetUserProfileDirectoryW"(Handle, Ptr, Ptr) Bool Host(kf::get_user_profile_directory_w);
    Shell32 "SHGetKnownFolderPath"(Ptr, U32, Handle, Ptr) U32 Host(kf::sh_get_known_folder_path);
    Combase "CoTaskMemFree"(Ptr) Void Host(kf::co_task_mem_free);
}

/// The export `name` of `dll`, if urun implements it.
pub(crate) fn find(dll: Dll, name: &str) -> Option<usize> {
    TABLE.iter().position(|e| e.dll == dll && e.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dll_names_resolve_case_insensitively() {
        let cases = [
            ("KERNEL32.dll", Some(Dll::Kernel32)),
            ("kernel32", Some(Dll::Kernel32)),
            ("msvcrt.dll", Some(Dll::Msvcrt)),
            ("api-ms-win-crt-stdio-l1-1-0.dll", Some(Dll::Msvcrt)),
            ("VCRUNTIME140.dll", Some(Dll::Msvcrt)),
            ("vcruntime140_1.dll", Some(Dll::Other("vcruntime140_1"))),
            ("USER32.dll", Some(Dll::Other("user32"))),
            ("api-ms-win-core-synch-l1-2-0.dll", Some(Dll::Kernel32)),
            ("libgcrypt-20.dll", None),
        ];
        for (name, want) in cases {
            assert_eq!(Dll::resolve(name), want, "{name}");
        }
    }

    /// No export is listed twice (binding would pick the first silently).
    #[test]
    fn exports_are_unique() {
        for (i, e) in TABLE.iter().enumerate() {
            assert_eq!(find(e.dll, e.name), Some(i), "{}!{} listed twice", e.dll.short(), e.name);
        }
    }
}
