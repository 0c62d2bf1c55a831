import asyncio, pytest, pytest_asyncio
from darkmesh_redis.backend import RedisRelayBackend

@pytest_asyncio.fixture
async def dbg_backend(settings_factory):
    b = RedisRelayBackend(settings_factory())
    await b.start()
    yield b
    t = asyncio.create_task(b.close())
    await asyncio.sleep(3)
    if not t.done():
        for task in asyncio.all_tasks():
            task.print_stack()
    await asyncio.wait_for(t, 2)

@pytest.mark.asyncio
async def test_dbg(dbg_backend):
    assert dbg_backend
