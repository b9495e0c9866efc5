// Where an idle worker sleeps: one epoll_wait with no timeout on its own
// epoll instance, over the listener, the control socket from the master,
// and (with --prestart) the pidfd of the program waiting for its
// connection. Nothing wakes it but one of those, or a signal.
import { EINTR, SysError } from "../system/ffi.ts";
import { tryEpollWait } from "../system/poll.ts";
import { EPOLL_DATA_OFFSET, EPOLL_EVENT_SIZE, epollAdd, epollCreate, epollDelete, EPOLLEXCLUSIVE, EPOLLIN } from "../system/poll.ts";
import { nextTick } from "../system/signals.ts";

const MAX_EVENTS = 4;

export class Waiter {
  private readonly epfd = epollCreate();
  private readonly events = new Uint8Array(EPOLL_EVENT_SIZE * MAX_EVENTS);
  private readonly view = new DataView(this.events.buffer);

  constructor(listenFd: number, controlFd: number) {
    // EPOLLEXCLUSIVE: a connection wakes one waiting worker, as a blocking
    // accept() did; a plain poll() on the shared listener would wake them all.
    epollAdd(this.epfd, listenFd, EPOLLIN | EPOLLEXCLUSIVE);
    // A byte (retire) or end of file (the master is gone): both read as EPOLLIN.
    epollAdd(this.epfd, controlFd, EPOLLIN);
  }

  /** Watches one more descriptor (a pidfd); closing it removes it. */
  watch(fd: number): void {
    epollAdd(this.epfd, fd, EPOLLIN);
  }

  /** Stops watching a descriptor that stays open (a Child's pidfd, waited on after its connection). */
  unwatch(fd: number): void {
    epollDelete(this.epfd, fd);
  }

  /**
   * Blocks the JavaScript thread until something is ready and returns the
   * ready descriptors. A signal ends the wait with none, after letting its
   * handlers run (Bun runs them only from its event loop).
   */
  async wait(): Promise<Set<number>> {
    const ready = new Set<number>();
    const count = tryEpollWait(this.epfd, this.events, MAX_EVENTS, -1);
    if (count === -EINTR) {
      await nextTick();
      return ready;
    }
    if (count < 0) throw new SysError("epoll_wait", -count);
    for (let i = 0; i < count; i++) ready.add(this.view.getUint32(i * EPOLL_EVENT_SIZE + EPOLL_DATA_OFFSET, true));
    return ready;
  }
}
