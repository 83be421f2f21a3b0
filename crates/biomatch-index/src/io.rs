//! FAISS indexes to and from bytes in memory, never through a file: a snapshot is sealed before it
//! touches the disk, so no plaintext index is ever written.
//!
//! FAISS's C API takes reader/writer callbacks without a context pointer, so the bytes pass through
//! a thread-local buffer (writing) or reader (reading); each call runs start to end on the calling
//! thread.

use faiss::index::{FromInnerPtr, IndexImpl};
use faiss_sys::{
    FaissIOReader, FaissIOWriter, faiss_CustomIOReader_free, faiss_CustomIOReader_new,
    faiss_CustomIOWriter_free, faiss_CustomIOWriter_new, faiss_get_last_error, faiss_read_index_custom,
    faiss_write_index_custom,
};
use std::cell::RefCell;
use std::ffi::c_void;
use std::io::Read;

use crate::IndexError;

thread_local! {
    static SINK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The reader FAISS is reading from (borrowed for the duration of one `from_reader` call)
    /// and the first error it returned.
    static SOURCE: RefCell<Option<(*mut (dyn Read + 'static), Option<std::io::Error>)>> = const { RefCell::new(None) };
}

unsafe extern "C" fn write_items(ptr: *const c_void, size: usize, nitems: usize) -> usize {
    let Some(len) = size.checked_mul(nitems) else { return 0 };
    if len > 0 {
        // SAFETY: FAISS passes a buffer of `size * nitems` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
        SINK.with(|sink| sink.borrow_mut().extend_from_slice(bytes));
    }
    nitems
}

unsafe extern "C" fn read_items(ptr: *mut c_void, size: usize, nitems: usize) -> usize {
    let Some(len) = size.checked_mul(nitems).filter(|len| *len > 0) else { return 0 };
    SOURCE.with(|source| {
        let mut source = source.borrow_mut();
        let Some((reader, error)) = source.as_mut() else { return 0 };
        // SAFETY: FAISS passes a buffer of `size * nitems` writable bytes.
        let buffer = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) };
        // SAFETY: the reader outlives the `from_reader` call this callback runs within.
        let reader = unsafe { &mut **reader };
        let mut filled = 0;
        while filled < len {
            match reader.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error.get_or_insert(e);
                    break;
                }
            }
        }
        filled / size
    })
}

/// FAISS's message for a failed call.
fn check(code: std::os::raw::c_int, what: &str) -> Result<(), IndexError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: after a failed call FAISS keeps a NUL-terminated message for this thread.
    let message = unsafe {
        let e = faiss_get_last_error();
        if e.is_null() { String::new() } else { std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned() }
    };
    Err(IndexError::Snapshot(format!("{what} failed: {message}")))
}

/// Appends the index, in FAISS's own serialisation format, to `out`.
pub fn append_bytes(index: &IndexImpl, out: &mut Vec<u8>) -> Result<(), IndexError> {
    SINK.with(|sink| std::mem::swap(&mut *sink.borrow_mut(), out));
    let mut writer = std::ptr::null_mut();
    // SAFETY: the writer is created, used for one synchronous write and freed on this thread; the
    // index pointer is valid for the duration of the borrow.
    let written = unsafe {
        check(faiss_CustomIOWriter_new(&mut writer, Some(write_items)), "creating the index writer").and_then(
            |()| {
                let written = faiss_write_index_custom(index.inner_ptr(), writer.cast::<FaissIOWriter>(), 0);
                faiss_CustomIOWriter_free(writer);
                check(written, "writing the index")
            },
        )
    };
    SINK.with(|sink| std::mem::swap(&mut *sink.borrow_mut(), out));
    written
}

/// An index from [`append_bytes`] output, read from `source` (which may stop at the index's end
/// or go on; FAISS reads exactly what it needs).
pub fn from_reader(source: &mut dyn Read) -> Result<IndexImpl, IndexError> {
    let source: *mut (dyn Read + '_) = source;
    // SAFETY: only the lifetime is erased; SOURCE forgets the pointer before this function returns.
    let source: *mut (dyn Read + 'static) = unsafe { std::mem::transmute(source) };
    SOURCE.with(|s| *s.borrow_mut() = Some((source, None)));
    let mut reader = std::ptr::null_mut();
    let mut out = std::ptr::null_mut();
    // SAFETY: as in `append_bytes`; on success FAISS hands over ownership of a new index.
    let read = unsafe {
        check(faiss_CustomIOReader_new(&mut reader, Some(read_items)), "creating the index reader").and_then(
            |()| {
                let read = faiss_read_index_custom(reader.cast::<FaissIOReader>(), 0, &mut out);
                faiss_CustomIOReader_free(reader);
                check(read, "reading the index")
            },
        )
    };
    // SAFETY: when the read succeeded, `out` is a new index we now own (and drop on error below).
    let index = read.map(|()| unsafe { IndexImpl::from_inner_ptr(out) });
    match SOURCE.with(|s| s.borrow_mut().take()).and_then(|(_, error)| error) {
        // The reader's own error says why FAISS saw a short read.
        Some(error) => Err(IndexError::Snapshot(format!("reading the index failed: {error}"))),
        None => index,
    }
}
