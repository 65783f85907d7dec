use super::*;

#[test]
fn wildcard_listens_on_ipv4_too() {
    let listener = bind("[::]:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
}
