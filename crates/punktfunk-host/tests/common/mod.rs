//! Helpers shared by the host's process tests.

/// A base port whose HTTP, HTTPS (−5), RTSP (+21) and streaming (+9..+11) ports are free now.
pub fn free_base() -> u16 {
    for _ in 0..200 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        let udp_free = |o: u16| std::net::UdpSocket::bind(("127.0.0.1", p + o)).is_ok();
        if p > 2000
            && p < 65000
            && std::net::TcpListener::bind(("127.0.0.1", p - 5)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 21)).is_ok()
            && udp_free(9)
            && udp_free(10)
            && udp_free(11)
        {
            return p;
        }
    }
    panic!("no free port pair");
}
