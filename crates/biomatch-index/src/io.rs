//! FAISS indexes to and from bytes in memory, never through a file: a snapshot is sealed before it
//! touches the disk, so no plaintext index is ever written.
//!
//! FAISS's C API takes reader/writer callbacks without a context pointer, so the bytes pass through
//! a thread-local buffer; each call runs start to end on the calling thread.

use faiss::index::{FromInnerPtr, IndexImpl};
use faiss_sys::{
    FaissIOReader, FaissIOWriter, faiss_CustomIOReader_free, faiss_CustomIOReader_new,
    faiss_CustomIOWriter_free, faiss_CustomIOWriter_new, faiss_get_last_error, faiss_read_index_custom,
    faiss_write_index_custom,
};
use std::cell::RefCell;
use std::ffi::c_void;

thread_local! {
    static SINK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static SOURCE: RefCell<(Vec<u8>, usize)> = const { RefCell::new((Vec::new(), 0)) };
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
    if size == 0 {
        return 0;
    }
    SOURCE.with(|source| {
        let mut source = source.borrow_mut();
        let (bytes, at) = &mut *source;
        let items = nitems.min((bytes.len() - *at) / size);
        let len = items * size;
        // SAFETY: FAISS passes a buffer of `size * nitems` writable bytes; we copy at most that.
        unsafe { std::ptr::copy_nonoverlapping(bytes[*at..].as_ptr(), ptr.cast::<u8>(), len) };
        *at += len;
        items
    })
}

/// FAISS's message for a failed call.
fn check(code: std::os::raw::c_int, what: &str) -> Result<(), String> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: after a failed call FAISS keeps a NUL-terminated message for this thread.
    let message = unsafe {
        let e = faiss_get_last_error();
        if e.is_null() { String::new() } else { std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned() }
    };
    Err(format!("{what} failed: {message}"))
}

/// The index in FAISS's own serialisation format.
pub fn to_bytes(index: &IndexImpl) -> Result<Vec<u8>, String> {
    SINK.with(|sink| sink.borrow_mut().clear());
    let mut writer = std::ptr::null_mut();
    // SAFETY: the writer is created, used for one synchronous write and freed on this thread; the
    // index pointer is valid for the duration of the borrow.
    unsafe {
        check(faiss_CustomIOWriter_new(&mut writer, Some(write_items)), "creating the index writer")?;
        let written = faiss_write_index_custom(index.inner_ptr(), writer.cast::<FaissIOWriter>(), 0);
        faiss_CustomIOWriter_free(writer);
        check(written, "writing the index")?;
    }
    Ok(SINK.with(|sink| std::mem::take(&mut *sink.borrow_mut())))
}

/// An index from [`to_bytes`] output.
pub fn from_bytes(bytes: Vec<u8>) -> Result<IndexImpl, String> {
    SOURCE.with(|source| *source.borrow_mut() = (bytes, 0));
    let mut reader = std::ptr::null_mut();
    let mut out = std::ptr::null_mut();
    // SAFETY: as in `to_bytes`; on success FAISS hands over ownership of a new index.
    let index = unsafe {
        check(faiss_CustomIOReader_new(&mut reader, Some(read_items)), "creating the index reader")?;
        let read = faiss_read_index_custom(reader.cast::<FaissIOReader>(), 0, &mut out);
        faiss_CustomIOReader_free(reader);
        SOURCE.with(|source| *source.borrow_mut() = (Vec::new(), 0));
        check(read, "reading the index")?;
        IndexImpl::from_inner_ptr(out)
    };
    Ok(index)
}
