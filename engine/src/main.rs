fn main() {
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0)).io_memory(64 << 10).spawn(|| async {
        let l = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        println!("bound {:?}", l.local_addr());
    }).unwrap();
    ex.join().unwrap();
}
