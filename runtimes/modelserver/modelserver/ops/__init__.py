"""Operations: metrics, logs, memory and threads of the serving process."""
