//! A few threads that serve a block device's reads in parallel.
//!
//! The event-loop thread parses requests; reads (`VIRTIO_BLK_T_IN`) go to a [`ReadPool`] job
//! queue instead of being executed in place. A worker reads from the disk's
//! [`SharedRead`](crate::disk::SharedRead) handle straight into guest memory, writes the status
//! byte, and hands back a [`Completion`] (then writes the `done` EventFd so the event loop adds it
//! to the used ring and interrupts the guest). Several reads in flight thus copy on several cores,
//! and each completes as soon as it is done. Writes and every other request still run on the
//! event loop, after the reads in flight finished (see `handler`).

use std::io;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::handler::read_request;
use super::request::Request;
use crate::disk::SharedRead;

/// A read for a worker.
pub struct ReadJob {
    /// Which activation of the device it belongs to (completions of an older one are dropped).
    pub generation: u64,
    pub head: u16,
    pub request: Request,
    pub mem: GuestMemoryMmap,
    pub reader: Arc<dyn SharedRead>,
}

/// A finished read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub generation: u64,
    pub head: u16,
    pub used: u32,
}

/// The workers and the two queues between them and the event loop.
pub struct ReadPool {
    jobs: Option<Sender<ReadJob>>,
    done: Receiver<Completion>,
    done_fd: Arc<EventFd>,
    threads: Vec<JoinHandle<()>>,
}

impl ReadPool {
    /// Starts `threads` workers; each finished read is signalled on `done_fd`.
    pub fn new(threads: usize, done_fd: EventFd) -> io::Result<Self> {
        let (jobs_tx, jobs_rx) = channel::<ReadJob>();
        let (done_tx, done_rx) = channel();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let done_fd = Arc::new(done_fd);
        let mut pool = ReadPool {
            jobs: Some(jobs_tx),
            done: done_rx,
            done_fd: done_fd.clone(),
            threads: Vec::new(),
        };
        for i in 0..threads {
            let (jobs, done, fd) = (jobs_rx.clone(), done_tx.clone(), done_fd.clone());
            let thread = std::thread::Builder::new()
                .name(format!("blk-read{i}"))
                .spawn(move || {
                    crate::seccomp::enter_thread_or_abort(crate::seccomp::ThreadKind::BlkRead);
                    work(&jobs, &done, &fd);
                })?;
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Queues a read; gives it back if the workers are gone.
    pub fn submit(&self, job: ReadJob) -> Result<(), Box<ReadJob>> {
        match &self.jobs {
            Some(tx) => tx.send(job).map_err(|e| Box::new(e.0)),
            None => Err(Box::new(job)),
        }
    }

    /// A finished read, if one is waiting.
    pub fn try_complete(&self) -> Option<Completion> {
        self.done.try_recv().ok()
    }

    /// Waits for the next finished read.
    pub fn complete(&self) -> Option<Completion> {
        self.done.recv().ok()
    }

    /// Consumes the `done` EventFd's count (the event loop calls this when it wakes).
    pub fn clear_signal(&self) {
        let _ = self.done_fd.read();
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        self.jobs = None; // the workers see a closed queue and stop
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn work(jobs: &Mutex<Receiver<ReadJob>>, done: &Sender<Completion>, done_fd: &EventFd) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let used = read_request(&job.request, &job.mem, job.reader.as_ref());
        let completion = Completion {
            generation: job.generation,
            head: job.head,
            used,
        };
        // Drop the job (its guest memory reference) before reporting it done.
        drop(job);
        if done.send(completion).is_err() {
            return;
        }
        let _ = done_fd.write(1);
    }
}
